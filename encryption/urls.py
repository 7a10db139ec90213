from __future__ import annotations

from django.urls import path

from encryption import views
from encryption.views import actions, blade, helpdesk, operations, review

app_name = "encryption"

urlpatterns = [
    path("", views.account_list, name="account-list"),
    # The Encryption blade: the page, its fragments, and its actions
    path("accounts/<int:pk>/encryption/", blade.account_encryption, name="account-encryption"),
    path("accounts/named/<str:name>/encryption/", blade.account_encryption_by_name, name="account-encryption-by-name"),
    path("accounts/<int:pk>/encryption/preflight/", operations.account_preflight, name="account-preflight"),
    path("accounts/<int:pk>/encryption/sync-vaults/", actions.account_sync_vaults, name="account-sync-vaults"),
    path("accounts/<int:pk>/refresh/", actions.account_refresh, name="account-refresh"),
    path("accounts/<int:pk>/update-version/", actions.account_update_version, name="account-update-version"),
    path("accounts/<int:pk>/rotate/", actions.account_rotate, name="account-rotate"),
    path("accounts/<int:pk>/revoke/", actions.account_revoke, name="account-revoke"),
    path("accounts/<int:pk>/restore/", actions.account_restore, name="account-restore"),
    path("operations/<int:pk>/", operations.operation_detail, name="operation-detail"),
    # Security reviewers: the audit trail, verification, evidence export, key-usage inventory
    path("audit/", review.audit_list, name="audit-list"),
    path("audit/<int:seq>/", review.audit_detail, name="audit-detail"),
    path("audit/verify/", review.audit_verify, name="audit-verify"),
    path("audit/public-key.pem", review.audit_public_key, name="audit-public-key"),
    path("audit/export/", review.audit_export, name="audit-export"),
    path("audit/export/<uuid:export_id>/", review.audit_export_detail, name="audit-export-detail"),
    path("audit/export/<uuid:export_id>/data", review.audit_export_data, name="audit-export-data"),
    path("audit/export/<uuid:export_id>/manifest", review.audit_export_manifest, name="audit-export-manifest"),
    path("keys/", review.key_list, name="key-list"),
    path("keys/<int:pk>/", review.key_detail, name="key-detail"),
    # Help-desk: search and diagnosis
    path("helpdesk/", helpdesk.helpdesk, name="helpdesk"),
    path("helpdesk/<int:pk>/diagnose", helpdesk.helpdesk_diagnose, name="helpdesk-diagnose"),
    path("helpdesk/<int:pk>/diagnosis", helpdesk.helpdesk_diagnosis, name="helpdesk-diagnosis"),
]
