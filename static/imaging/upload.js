// The upload page: collect files from a drop (folders are walked) or the pickers, send
// them in small batches with XMLHttpRequest (fetch cannot report upload progress), and
// show one result row per file as the server answers.
(function () {
  "use strict";
  var form = document.getElementById("img-upload-form");
  if (!form) { return; }
  var drop = document.getElementById("img-drop");
  var progress = document.getElementById("img-progress");
  var status = document.getElementById("img-status");
  var table = document.getElementById("img-results");
  var tbody = table.querySelector("tbody");
  var csrf = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  var msg = form.dataset;
  var BATCH_FILES = 8;
  var BATCH_BYTES = 16 * 1024 * 1024;
  var counts = { stored: 0, duplicate: 0, refused: 0, skipped: 0 };
  var busy = false;

  function format(template, values) {
    return template.replace(/\{(\w+)\}/g, function (_, key) { return String(values[key]); });
  }

  function readAll(reader) {
    // readEntries returns at most ~100 entries per call: read until it returns none.
    return new Promise(function (resolve, reject) {
      var all = [];
      (function next() {
        reader.readEntries(function (entries) {
          if (!entries.length) { resolve(all); return; }
          all = all.concat(entries);
          next();
        }, reject);
      })();
    });
  }

  function walk(entry) {
    if (entry.isFile) {
      return new Promise(function (resolve, reject) {
        entry.file(function (file) {
          resolve([{ file: file, path: entry.fullPath.replace(/^\//, "") }]);
        }, reject);
      });
    }
    return readAll(entry.createReader()).then(function (entries) {
      return Promise.all(entries.map(walk)).then(function (lists) { return [].concat.apply([], lists); });
    });
  }

  function fromList(fileList) {
    return Array.prototype.map.call(fileList, function (file) {
      return { file: file, path: file.webkitRelativePath || file.name };
    });
  }

  function batches(items) {
    var out = [];
    var current = [];
    var bytes = 0;
    items.forEach(function (item) {
      if (current.length && (current.length >= BATCH_FILES || bytes + item.file.size > BATCH_BYTES)) {
        out.push(current);
        current = [];
        bytes = 0;
      }
      current.push(item);
      bytes += item.file.size;
    });
    if (current.length) { out.push(current); }
    return out;
  }

  function addRow(result) {
    var row = document.createElement("tr");
    row.className = "img-result-" + result.status;
    var name = document.createElement("td");
    name.textContent = result.name;
    var outcome = document.createElement("td");
    outcome.textContent = msg["msg" + result.status.charAt(0).toUpperCase() + result.status.slice(1)] || result.status;
    var reason = document.createElement("td");
    if (result.study_uid && result.status !== "refused") {
      var link = document.createElement("a");
      link.href = msg.studyUrl.replace("STUDY_UID", encodeURIComponent(result.study_uid));
      link.textContent = msg.msgOpen;
      reason.appendChild(link);
    }
    reason.appendChild(document.createTextNode(result.reason || ""));
    row.appendChild(name);
    row.appendChild(outcome);
    row.appendChild(reason);
    tbody.appendChild(row);
    if (counts[result.status] !== undefined) { counts[result.status] += 1; }
  }

  function send(batch, onProgress) {
    return new Promise(function (resolve) {
      var data = new FormData();
      batch.forEach(function (item) {
        data.append("files", item.file, item.file.name);
        data.append("paths", item.path);
      });
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.setRequestHeader("X-CSRFToken", csrf);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.addEventListener("progress", function (event) {
        if (event.lengthComputable) { onProgress(event.loaded / event.total); }
      });
      xhr.addEventListener("load", function () {
        var body = null;
        try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
        if (xhr.status === 200 && body && body.results) {
          resolve(body.results);
          return;
        }
        var why = msg.msgFailed + " " + xhr.status + (body && body.error ? " " + body.error : "");
        resolve(batch.map(function (item) { return { name: item.path, status: "refused", reason: why }; }));
      });
      xhr.addEventListener("error", function () {
        resolve(batch.map(function (item) { return { name: item.path, status: "refused", reason: msg.msgFailed }; }));
      });
      xhr.send(data);
    });
  }

  function summary() {
    return format(msg.msgSummary, counts);
  }

  function upload(items) {
    if (busy || !items.length) { return; }
    busy = true;
    var total = items.reduce(function (sum, item) { return sum + item.file.size; }, 0) || 1;
    var sent = 0;
    var filesDone = 0;
    progress.hidden = false;
    progress.value = 0;
    table.hidden = false;
    var chain = Promise.resolve();
    batches(items).forEach(function (batch) {
      var size = batch.reduce(function (sum, item) { return sum + item.file.size; }, 0);
      chain = chain.then(function () {
        status.textContent = format(msg.msgUploading, { done: filesDone, total: items.length });
        return send(batch, function (fraction) {
          progress.value = Math.round(100 * (sent + fraction * size) / total);
        }).then(function (results) {
          results.forEach(addRow);
          sent += size;
          filesDone += batch.length;
          progress.value = Math.round(100 * sent / total);
        });
      });
    });
    chain.then(function () {
      busy = false;
      progress.value = 100;
      status.textContent = msg.msgDone + " " + summary();
    });
  }

  drop.addEventListener("dragover", function (event) {
    event.preventDefault();
    drop.classList.add("img-drop-over");
  });
  drop.addEventListener("dragleave", function () { drop.classList.remove("img-drop-over"); });
  drop.addEventListener("drop", function (event) {
    event.preventDefault();
    drop.classList.remove("img-drop-over");
    var items = event.dataTransfer.items;
    var entries = items ? Array.prototype.map.call(items, function (item) {
      return item.webkitGetAsEntry ? item.webkitGetAsEntry() : null;
    }).filter(Boolean) : [];
    if (!entries.length) {
      upload(fromList(event.dataTransfer.files));
      return;
    }
    Promise.all(entries.map(walk)).then(function (lists) { upload([].concat.apply([], lists)); });
  });
  ["img-pick-files", "img-pick-folder"].forEach(function (id) {
    var input = document.getElementById(id);
    input.addEventListener("change", function () {
      upload(fromList(input.files));
      input.value = "";
    });
  });
  form.addEventListener("submit", function (event) { event.preventDefault(); });
})();
