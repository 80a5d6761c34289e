/* Threadline panel: behaviour Flask-Admin's own templates put in inline handlers, which the panel's
   Content-Security-Policy does not run: the confirmation before a delete, the bulk "With selected" actions,
   and links whose address is "javascript:" (menu toggles), which must not be followed.
   Vanilla JS, loaded on every page of the panel. */
(function () {
  "use strict";

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var message = form && form.getAttribute ? form.getAttribute("data-confirm") : null;
    if (message && !window.confirm(message)) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }, true);

  document.addEventListener("click", function (event) {
    var link = event.target && event.target.closest ? event.target.closest("a") : null;
    if (!link) { return; }
    var action = link.getAttribute("data-tl-action");
    if (action) {
      event.preventDefault();
      if (window.modelActions) { window.modelActions.execute(action); }
      return;
    }
    var href = (link.getAttribute("href") || "").trim().toLowerCase();
    if (href === "#" || href.indexOf("javascript:") === 0) { event.preventDefault(); }
  }, true);  // capturing: Flask-Admin's menu toggles stop the click from bubbling up to the document
})();
