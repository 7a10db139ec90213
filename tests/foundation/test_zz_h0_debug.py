from django.contrib.auth.models import Group
from django.db import connections
from django.contrib.staticfiles.testing import StaticLiveServerTestCase
from django.test import LiveServerTestCase
from tests.harness import CrossProcessTestCase
class D(LiveServerTestCase):
    serialized_rollback = True
    databases = {"default", "emulator"}
    def test_a(self):
        print("\nA", hasattr(connections["default"], "_test_serialized_contents"), Group.objects.count())
    def test_b(self):
        print("\nB", hasattr(connections["default"], "_test_serialized_contents"), Group.objects.count())
