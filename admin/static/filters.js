/* Threadline: filter rows that apply as soon as they change (forms marked data-autosubmit), and the
   dashboard's custom period dates, shown only when "Custom" is chosen. No inline handlers (CSP). */
(function () {
  "use strict";
  Array.prototype.forEach.call(document.querySelectorAll("form[data-autosubmit]"), function (form) {
    var apply = form.querySelector(".tl-apply");
    var custom = form.querySelector(".tl-custom-period");
    var period = form.querySelector('select[name="period"]');
    function showApply() {
      // the button only matters while custom dates are being typed
      if (apply) { apply.hidden = !(custom && period && period.value === "custom"); }
    }
    showApply();
    form.addEventListener("change", function (event) {
      if (event.target === period && custom) {
        custom.hidden = period.value !== "custom";
        showApply();
        if (period.value === "custom") { return; }  // wait for the dates
      }
      if (event.target.type === "date") {
        var from = form.querySelector('input[name="from"]'), to = form.querySelector('input[name="to"]');
        if (!from.value || !to.value) { return; }
      }
      form.submit();
    });
  });
})();
