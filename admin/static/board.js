/* Threadline pipeline board: drag and drop, and the keyboard's "Move" dialog, both POSTing to the move
   endpoint. A card moves at once; if the server refuses, it goes back with a message next to it.
   Dropping on a lost stage asks for the reason first. Vanilla JS, no library, no inline handlers (CSP);
   the CSRF token travels in the X-CSRFToken header. */
(function () {
  "use strict";
  var boardEl = document.getElementById("board");
  if (!boardEl) { return; }
  var moveUrl = boardEl.getAttribute("data-move-url");
  var ownerId = boardEl.getAttribute("data-owner-id") || null;
  var tokenMeta = document.querySelector('meta[name="csrf-token"]');
  var token = tokenMeta ? tokenMeta.getAttribute("content") : "";
  var toast = document.getElementById("board-status");
  var dialog = document.getElementById("move-dialog");
  var form = document.getElementById("move-form");
  var reasonBox = form ? form.querySelector(".tl-lost-reason") : null;
  var toastTimer = null;
  var dialogCard = null;

  // filters apply as soon as they change (no "Show" button)
  var filter = document.getElementById("board-filter");
  if (filter) {
    filter.addEventListener("change", function () { filter.submit(); });
  }

  function say(text, isError) {
    if (!toast) { return; }
    toast.textContent = text;
    toast.hidden = false;
    toast.classList.toggle("tl-toast-error", !!isError);
    if (toastTimer) { window.clearTimeout(toastTimer); }
    toastTimer = window.setTimeout(function () { toast.hidden = true; }, isError ? 10000 : 5000);
  }

  function targetFor(stageId) {
    return document.querySelector('[data-stage-id="' + stageId + '"]:not(input)');
  }

  function applyTotals(columns) {
    columns.forEach(function (c) {
      var target = targetFor(c.stage_id);
      if (!target) { return; }
      var count = target.querySelector(".tl-count");
      if (count) { count.textContent = String(c.count); }
      var word = target.querySelector(".tl-count-word");
      if (word) { word.textContent = c.count === 1 ? "deal" : "deals"; }
      var total = target.querySelector(".tl-total");
      if (total) { total.textContent = c.total; }
      var weighted = target.querySelector(".tl-weighted");
      if (weighted) { weighted.textContent = c.weighted; }
    });
  }

  function titleOf(card) { return card.getAttribute("data-title") || "The deal"; }

  function cardError(card, text) {
    var note = card.querySelector(".tl-card-error");
    if (!note) {
      note = document.createElement("div");
      note.className = "tl-card-error";
      note.setAttribute("role", "alert");
      card.appendChild(note);
    }
    note.textContent = text;
    card.scrollIntoView({ block: "nearest", inline: "nearest" });
  }

  function clearError(card) {
    var note = card.querySelector(".tl-card-error");
    if (note) { note.parentNode.removeChild(note); }
  }

  function move(card, target, lostReason) {
    var stageId = target.getAttribute("data-stage-id");
    var home = card.parentNode;
    var homeNext = card.nextSibling;
    var closing = target.classList.contains("tl-dropzone");
    clearError(card);
    // the card moves at once; the server's answer confirms it or sends it back
    if (closing) {
      card.hidden = true;
    } else {
      var list = target.querySelector(".tl-cards");
      if (list.firstChild !== card) { list.insertBefore(card, list.firstChild); }
    }
    card.classList.add("tl-moving");
    var body = { deal_id: Number(card.getAttribute("data-deal-id")), stage_id: Number(stageId), owner_id: ownerId };
    if (lostReason !== undefined) { body.lost_reason = lostReason; }

    function putBack(message) {
      card.classList.remove("tl-moving");
      card.hidden = false;
      home.insertBefore(card, homeNext);
      cardError(card, message);
      say(titleOf(card) + " was not moved. " + message, true);
    }

    fetch(moveUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": token, "Accept": "application/json" },
      body: JSON.stringify(body)
    }).then(function (response) {
      return response.json().catch(function () {
        return { ok: false, error: "The server answered with an error (" + response.status + ")." };
      });
    }).then(function (data) {
      if (!data.ok) { putBack(data.error); return; }
      card.classList.remove("tl-moving");
      applyTotals(data.columns);
      if (closing) { card.parentNode.removeChild(card); }
      say(titleOf(card) + " moved to " + data.stage_name + ".", false);
    }).catch(function () {
      putBack("The panel could not be reached: check the connection and try again.");
    });
  }

  // ---- the Move dialog: the keyboard's way, and the lost reason after a drop ------------------------------

  function showReason(show) {
    if (!reasonBox) { return; }
    reasonBox.hidden = !show;
  }

  function openDialog(card, presetStageId) {
    if (!dialog || !form) { return; }
    dialogCard = card;
    var current = card.closest(".tl-column").getAttribute("data-stage-id");
    var lostOnly = presetStageId !== undefined;
    form.querySelector('input[name="deal_id"]').value = card.getAttribute("data-deal-id");
    form.querySelector('textarea[name="lost_reason"]').value = "";
    form.querySelector(".tl-stage-choices").hidden = lostOnly;
    var checked = null;
    Array.prototype.forEach.call(form.querySelectorAll('input[name="stage_id"]'), function (radio) {
      radio.checked = radio.value === String(lostOnly ? presetStageId : current);
      if (radio.checked) { checked = radio; }
    });
    showReason(!!checked && checked.getAttribute("data-stage-kind") === "lost");
    document.getElementById("move-dialog-title").textContent =
      (lostOnly ? "Why was " + titleOf(card) + " lost?" : "Move " + titleOf(card));
    document.getElementById("move-submit").textContent = lostOnly ? "Mark as lost" : "Move";
    dialog.showModal();
    var focus = lostOnly ? form.querySelector("textarea") : checked;
    if (focus) { focus.focus(); }
  }

  function closeDialog() {
    var card = dialogCard;
    dialogCard = null;
    if (dialog.open) { dialog.close(); }
    if (card && !card.hidden) {
      var button = card.querySelector(".tl-card-menu");
      if (button) { button.focus(); }
    }
  }

  if (form) {
    form.addEventListener("change", function (event) {
      if (event.target.name === "stage_id") {
        showReason(event.target.getAttribute("data-stage-kind") === "lost");
      }
    });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var card = dialogCard;
      var chosen = form.querySelector('input[name="stage_id"]:checked');
      if (!card || !chosen) { closeDialog(); return; }
      var target = targetFor(chosen.value);
      var lost = chosen.getAttribute("data-stage-kind") === "lost";
      var reason = lost ? form.querySelector("textarea").value.trim() : undefined;
      if (target && target.getAttribute("data-stage-id") !== card.closest(".tl-column").getAttribute("data-stage-id")) {
        move(card, target, reason);
      }
      closeDialog();  // after the move, so focus returns to the card in its new place
    });
    document.getElementById("move-cancel").addEventListener("click", closeDialog);
    dialog.addEventListener("cancel", function (event) { event.preventDefault(); closeDialog(); });
  }

  boardEl.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest(".tl-card-menu") : null;
    if (button) { openDialog(button.closest(".tl-card")); }
  });

  // ---- drag and drop -------------------------------------------------------------------------------------

  var dragged = null;
  document.addEventListener("dragstart", function (event) {
    var card = event.target.closest ? event.target.closest(".tl-card") : null;
    if (!card || !boardEl.contains(card)) { return; }
    dragged = card;
    event.dataTransfer.setData("text/plain", card.getAttribute("data-deal-id"));
    event.dataTransfer.effectAllowed = "move";
    card.classList.add("tl-dragging");
    document.body.classList.add("tl-board-dragging");
  });
  document.addEventListener("dragend", function () {
    if (dragged) { dragged.classList.remove("tl-dragging"); }
    dragged = null;
    document.body.classList.remove("tl-board-dragging");
  });
  Array.prototype.forEach.call(document.querySelectorAll(".tl-column, .tl-dropzone"), function (target) {
    target.addEventListener("dragover", function (event) {
      if (!dragged) { return; }
      event.preventDefault();
      event.dataTransfer.dropEffect = "move";
      target.classList.add("tl-drop-target");
    });
    target.addEventListener("dragleave", function () { target.classList.remove("tl-drop-target"); });
    target.addEventListener("drop", function (event) {
      event.preventDefault();
      target.classList.remove("tl-drop-target");
      var card = dragged;
      if (!card) { return; }
      var from = card.closest(".tl-column");
      if (from === target) { return; }
      if (target.getAttribute("data-stage-kind") === "lost") {
        openDialog(card, target.getAttribute("data-stage-id"));
      } else {
        move(card, target);
      }
    });
  });
})();
