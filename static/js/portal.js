// Small behaviours only; htmx does the requests, and every page works without this file.
"use strict";

(function () {
  // Save follows the prerequisite checks: a blocking check disables it (the server refuses it anyway).
  function syncSaveButtons() {
    var result = document.getElementById("preflight-result");
    if (!result) {
      return;
    }
    var blocked = result.getAttribute("data-blocking") === "true";
    document.querySelectorAll(".save-button").forEach(function (button) {
      button.disabled = blocked;
    });
  }

  // "Use your own key" and the "Encryption type" radios say the same thing; keep them in step.
  function onChange(event) {
    var target = event.target;
    if (target.id === "id_use_own_key" && !target.checked) {
      var microsoft = document.querySelector('input[name="encryption_type"][value="mmk"]');
      if (microsoft) {
        microsoft.checked = true;
      }
    }
    if (target.name === "encryption_type" && target.value === "cmk" && target.checked) {
      var own = document.getElementById("id_use_own_key");
      if (own) {
        own.checked = true;
      }
    }
  }

  // Modals: focus the first control when one opens; Escape or Cancel closes it.
  function closeModal() {
    var modal = document.getElementById("modal");
    if (modal && modal.classList.contains("modal-backdrop")) {
      var empty = document.createElement("div");
      empty.id = "modal";
      modal.replaceWith(empty);
      if (lastOpener) {
        lastOpener.focus();
      }
    }
  }

  var lastOpener = null;

  document.addEventListener("change", onChange);

  document.addEventListener("click", function (event) {
    var dismiss = event.target.closest('[data-dismiss="modal"]');
    if (dismiss && document.querySelector("#modal.modal-backdrop")) {
      event.preventDefault();
      closeModal();
      return;
    }
    var opener = event.target.closest('[hx-target="#modal"]');
    if (opener) {
      lastOpener = opener;
    }
  });

  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape") {
      closeModal();
    }
  });

  document.addEventListener("htmx:afterSettle", function () {
    syncSaveButtons();
    var modal = document.getElementById("modal");
    if (modal && modal.classList.contains("modal-backdrop") && !modal.contains(document.activeElement)) {
      var first = modal.querySelector("input, button, select, textarea, a[href]");
      if (first) {
        first.focus();
      }
    }
  });

  document.addEventListener("DOMContentLoaded", syncSaveButtons);
})();
