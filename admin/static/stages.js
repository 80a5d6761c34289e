/* Threadline pipeline editor: reorder a pipeline's stages by dragging a row or with its Up/Down buttons
   (keyboard), keeping the form's hidden "order" field in step, and flag unsaved changes. Saving is the
   form's own submit. Vanilla JS, no inline handlers (CSP). */
(function () {
  "use strict";
  Array.prototype.forEach.call(document.querySelectorAll(".tl-stage-form"), function (form) {
    var body = form.querySelector("tbody");
    var order = form.querySelector('input[name="order"]');
    var unsaved = form.querySelector(".tl-unsaved");
    var dragged = null;

    function changed() {
      order.value = Array.prototype.map.call(body.querySelectorAll(".tl-stage-row"), function (row) {
        return row.getAttribute("data-stage-id");
      }).join(",");
      if (unsaved) { unsaved.hidden = false; }
    }

    form.addEventListener("input", function () { if (unsaved) { unsaved.hidden = false; } });
    form.addEventListener("click", function (event) {
      var button = event.target.closest ? event.target.closest(".tl-up, .tl-down") : null;
      if (!button) { return; }
      var row = button.closest(".tl-stage-row");
      if (button.classList.contains("tl-up") && row.previousElementSibling) {
        body.insertBefore(row, row.previousElementSibling);
      } else if (button.classList.contains("tl-down") && row.nextElementSibling) {
        body.insertBefore(row.nextElementSibling, row);
      } else {
        return;
      }
      changed();
      button.focus();
    });

    body.addEventListener("dragstart", function (event) {
      var row = event.target.closest ? event.target.closest(".tl-stage-row") : null;
      if (!row || event.target.matches("input, select")) { return; }
      dragged = row;
      event.dataTransfer.setData("text/plain", row.getAttribute("data-stage-id"));
      event.dataTransfer.effectAllowed = "move";
      row.classList.add("tl-dragging");
    });
    body.addEventListener("dragover", function (event) {
      if (!dragged) { return; }
      event.preventDefault();
      var row = event.target.closest ? event.target.closest(".tl-stage-row") : null;
      if (!row || row === dragged) { return; }
      var box = row.getBoundingClientRect();
      var after = event.clientY > box.top + box.height / 2;
      body.insertBefore(dragged, after ? row.nextElementSibling : row);
    });
    body.addEventListener("drop", function (event) {
      if (!dragged) { return; }
      event.preventDefault();
      changed();
    });
    body.addEventListener("dragend", function () {
      if (dragged) { dragged.classList.remove("tl-dragging"); changed(); }
      dragged = null;
    });
  });
})();
