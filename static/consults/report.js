// Draft autosave of the report editor: PUT the fields to the REST API a moment after typing stops.
(function () {
  "use strict";
  var form = document.getElementById("report-form");
  if (!form) { return; }
  var status = document.getElementById("autosave-status");
  var token = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  var timer = null;
  var last = "";

  function payload(property) {
    return JSON.stringify({
      findings: form.elements.findings[property],
      impression: form.elements.impression[property],
      recommendation: form.elements.recommendation[property]
    });
  }

  function save() {
    var body = payload("value");
    if (body === last) { return; }
    fetch(form.dataset.autosaveUrl, {
      method: "PUT",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": token, "Accept": "application/json" },
      body: body
    }).then(function (response) {
      if (!response.ok) { throw new Error(String(response.status)); }
      return response.json();
    }).then(function (data) {
      last = body;
      status.textContent = form.dataset.savedText + " " + new Date(data.updated_at).toLocaleTimeString();
      status.dataset.state = "saved";
    }).catch(function () {
      status.textContent = form.dataset.failedText;
      status.dataset.state = "failed";
    });
  }

  function schedule() {
    window.clearTimeout(timer);
    timer = window.setTimeout(save, 1500);
  }

  // What the server last stored is the fields' HTML defaults. Text typed before this
  // deferred script ran fired no listener, so compare and save it too.
  last = payload("defaultValue");
  form.addEventListener("input", schedule);
  if (payload("value") !== last) { schedule(); }
}());
