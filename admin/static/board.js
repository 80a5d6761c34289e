/* Threadline pipeline board: HTML5 drag and drop and the "Move" selects, both POSTing to the move endpoint.
   Vanilla JS, no external library; the CSRF token travels in the X-CSRFToken header. */
(function () {
  "use strict";
  var boardEl = document.getElementById("board");
  if (!boardEl) { return; }
  var moveUrl = boardEl.getAttribute("data-move-url");
  var ownerId = boardEl.getAttribute("data-owner-id") || null;
  var tokenMeta = document.querySelector('meta[name="csrf-token"]');
  var token = tokenMeta ? tokenMeta.getAttribute("content") : "";
  var statusEl = document.getElementById("board-status");

  function say(text) { if (statusEl) { statusEl.textContent = text; } }

  function columnFor(stageId) {
    return boardEl.querySelector('.tl-column[data-stage-id="' + stageId + '"]');
  }

  function applyTotals(columns) {
    columns.forEach(function (c) {
      var col = columnFor(c.stage_id);
      if (!col) { return; }
      col.querySelector(".tl-count").textContent = String(c.count);
      col.querySelector(".tl-total").textContent = c.total;
      col.querySelector(".tl-weighted").textContent = c.weighted;
    });
  }

  function placeCard(card, stageId) {
    var col = columnFor(stageId);
    if (!col) { return; }
    var list = col.querySelector(".tl-cards");
    list.insertBefore(card, list.firstChild);
    var select = card.querySelector(".tl-move-select");
    if (select) { select.value = String(stageId); }
  }

  function move(dealId, stageId) {
    var card = document.getElementById("deal-" + dealId);
    var col = columnFor(stageId);
    if (!card || !col) { return; }
    var body = { deal_id: Number(dealId), stage_id: Number(stageId), owner_id: ownerId };
    if (col.getAttribute("data-stage-kind") === "lost") {
      var reason = window.prompt("Why was this deal lost? (optional)", "");
      if (reason === null) { return; }
      body.lost_reason = reason;
    }
    card.classList.add("tl-moving");
    fetch(moveUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": token, "Accept": "application/json" },
      body: JSON.stringify(body)
    }).then(function (response) {
      return response.json().catch(function () { return { ok: false, error: "HTTP " + response.status }; });
    }).then(function (data) {
      card.classList.remove("tl-moving");
      if (!data.ok) { say("Not moved: " + data.error); return; }
      placeCard(card, data.stage_id);
      applyTotals(data.columns);
      say(card.querySelector(".tl-card-title").textContent + " moved to " + data.stage_name + ".");
    }).catch(function (err) {
      card.classList.remove("tl-moving");
      say("Not moved: " + err);
    });
  }

  boardEl.addEventListener("dragstart", function (event) {
    var card = event.target.closest ? event.target.closest(".tl-card") : null;
    if (!card) { return; }
    event.dataTransfer.setData("text/plain", card.getAttribute("data-deal-id"));
    event.dataTransfer.effectAllowed = "move";
    card.classList.add("tl-dragging");
  });
  boardEl.addEventListener("dragend", function (event) {
    var card = event.target.closest ? event.target.closest(".tl-card") : null;
    if (card) { card.classList.remove("tl-dragging"); }
  });
  Array.prototype.forEach.call(boardEl.querySelectorAll(".tl-column"), function (col) {
    col.addEventListener("dragover", function (event) {
      event.preventDefault();
      event.dataTransfer.dropEffect = "move";
      col.classList.add("tl-drop-target");
    });
    col.addEventListener("dragleave", function () { col.classList.remove("tl-drop-target"); });
    col.addEventListener("drop", function (event) {
      event.preventDefault();
      col.classList.remove("tl-drop-target");
      var dealId = event.dataTransfer.getData("text/plain");
      if (dealId) { move(dealId, col.getAttribute("data-stage-id")); }
    });
  });
  boardEl.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.classList.contains("tl-move-form")) { return; }
    event.preventDefault();
    move(form.querySelector('input[name="deal_id"]').value, form.querySelector("select").value);
  });
})();
