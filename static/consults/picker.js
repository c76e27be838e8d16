// The consult form's study picker: searches as the user types (consults:study_search) and
// keeps the ticked studies; shows the deadline of the chosen priority. Without this script
// the search form reloads the page with the same results.
(function () {
  "use strict";
  var search = document.getElementById("study-search");
  var found = document.getElementById("studies-found");
  var picked = document.getElementById("studies-picked");
  if (search && found && picked) {
    var timer = null;
    var latest = 0;
    var keepTicked = function () {
      found.querySelectorAll("input[type=checkbox]:checked").forEach(function (box) {
        picked.appendChild(box.closest("label"));
      });
      picked.querySelectorAll("input[type=checkbox]:not(:checked)").forEach(function (box) {
        box.closest("label").remove();
      });
    };
    var choice = function (study) {
      var label = document.createElement("label");
      label.className = "cs-study-choice";
      var box = document.createElement("input");
      box.type = "checkbox";
      box.name = "studies";
      box.value = String(study.id);
      label.appendChild(box);
      label.appendChild(document.createTextNode(" " + study.label));
      return label;
    };
    var note = function (text) {
      var p = document.createElement("p");
      p.className = "cs-empty";
      p.textContent = text;
      return p;
    };
    var run = function () {
      var params = new URLSearchParams(new FormData(search));
      params.delete("study");
      var mine = ++latest;
      fetch(search.dataset.url + "?" + params.toString(), { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (r) { return r.json().then(function (body) { return { ok: r.ok, body: body }; }); })
        .then(function (answer) {
          if (mine !== latest) return;
          keepTicked();
          var have = new Set(Array.prototype.map.call(picked.querySelectorAll("input"), function (i) { return i.value; }));
          found.replaceChildren();
          if (!answer.ok) { found.appendChild(note(found.dataset.failed)); return; }
          var shown = answer.body.studies.filter(function (s) { return !have.has(String(s.id)); });
          if (!shown.length) found.appendChild(note(found.dataset.empty));
          shown.forEach(function (s) { found.appendChild(choice(s)); });
          var hint = document.getElementById("studies-hint");
          if (hint) hint.remove();
        })
        .catch(function () { if (mine === latest) { found.replaceChildren(note(found.dataset.failed)); } });
    };
    search.addEventListener("submit", function (event) { event.preventDefault(); run(); });
    search.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(run, 300);
    });
  }
  var priority = document.getElementById("id_priority");
  var deadlines = document.getElementById("priority-deadlines");
  if (priority && deadlines) {
    var mark = function () {
      deadlines.querySelectorAll("li").forEach(function (li) {
        li.classList.toggle("cs-deadline-chosen", li.dataset.priority === priority.value);
      });
    };
    priority.addEventListener("change", mark);
    mark();
  }
})();
