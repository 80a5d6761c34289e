/* Threadline's search everywhere: the header box answers as you type (GET data-suggest?q=..., JSON), grouped
   by contacts, companies and deals. Keyboard: "/" focuses the box, arrow keys move through the answers, Enter
   opens the chosen record (or, with none chosen, the full results page), Escape closes the list. Without
   JavaScript the box is a plain form that opens the results page. Answers are written with textContent only. */
(function () {
  "use strict";
  var input = document.getElementById("tl-search");
  var list = document.getElementById("tl-search-results");
  if (!input || !list) { return; }
  var form = input.form;
  var timer = null;
  var asked = 0;
  var active = -1;

  function hits() { return list.querySelectorAll(".tl-search-hit"); }

  function close() {
    list.hidden = true;
    input.setAttribute("aria-expanded", "false");
    input.removeAttribute("aria-activedescendant");
    active = -1;
  }

  function choose(index) {
    var all = hits();
    if (!all.length) { return; }
    active = (index + all.length) % all.length;
    for (var i = 0; i < all.length; i++) {
      all[i].classList.toggle("tl-active", i === active);
      all[i].setAttribute("aria-selected", i === active ? "true" : "false");
    }
    input.setAttribute("aria-activedescendant", all[active].id);
    all[active].scrollIntoView({ block: "nearest" });
  }

  function show(answer) {
    list.textContent = "";
    active = -1;
    var n = 0;
    answer.groups.forEach(function (group) {
      var head = document.createElement("div");
      head.className = "tl-search-group";
      head.textContent = group.label;
      list.appendChild(head);
      group.hits.forEach(function (hit) {
        var link = document.createElement("a");
        link.className = "tl-search-hit";
        link.href = hit.url;
        link.id = "tl-search-hit-" + (n++);
        link.setAttribute("role", "option");
        link.textContent = hit.label;
        if (hit.detail) {
          var detail = document.createElement("small");
          detail.textContent = hit.detail;
          link.appendChild(detail);
        }
        list.appendChild(link);
      });
    });
    var all = document.createElement("a");
    all.className = "tl-search-hit tl-search-all";
    all.href = answer.all;
    all.id = "tl-search-hit-" + n;
    all.setAttribute("role", "option");
    all.textContent = answer.groups.length ? "All results for \u201c" + answer.query + "\u201d"
                                           : "Nothing found for \u201c" + answer.query + "\u201d";
    list.appendChild(all);
    list.hidden = false;
    input.setAttribute("aria-expanded", "true");
  }

  function ask() {
    var query = input.value.trim();
    if (!query) { close(); return; }
    var mine = ++asked;
    fetch(input.getAttribute("data-suggest") + "?q=" + encodeURIComponent(query), {
      credentials: "same-origin", headers: { "Accept": "application/json" }
    }).then(function (response) {
      return response.ok ? response.json() : null;
    }).then(function (answer) {
      if (answer && mine === asked && input.value.trim()) { show(answer); }
    }).catch(function () { /* the results page still works: Enter submits the form */ });
  }

  input.addEventListener("input", function () {
    window.clearTimeout(timer);
    timer = window.setTimeout(ask, 120);
  });

  input.addEventListener("keydown", function (event) {
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      if (list.hidden) { ask(); return; }
      event.preventDefault();
      choose(active + (event.key === "ArrowDown" ? 1 : -1));
    } else if (event.key === "Enter") {
      var all = hits();
      if (!list.hidden && active >= 0 && all[active]) {
        event.preventDefault();
        window.location.assign(all[active].href);
      }
      // otherwise the form submits: the full results page
    } else if (event.key === "Escape") {
      close();
    }
  });

  input.addEventListener("blur", function () {
    // let a click on an answer land before the list goes away
    window.setTimeout(function () { if (document.activeElement !== input) { close(); } }, 200);
  });

  document.addEventListener("keydown", function (event) {
    var target = event.target;
    var typing = target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
    if (event.key === "/" && !typing && !event.ctrlKey && !event.metaKey && !event.altKey) {
      event.preventDefault();
      input.focus();
      input.select();
    }
  });

  if (form) {
    form.addEventListener("submit", function () { window.clearTimeout(timer); });
  }
})();
