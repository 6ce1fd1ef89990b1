{% raw %}
// The taxonomy editor: records a person's edits and exports edits.json.
// The rules mirror failtax/edits.py, which checks them again when the file is applied.
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("failtax-data").textContent);
  var OUT = DATA.outlier;
  var SHOWN_MAX = 300; // episode rows shown per mode (a filter narrows the rest)
  var STORE = "failtax-edits:" + DATA.fingerprint;
  var edits = [];
  var openModes = new Set();
  var filters = {};
  var picked = new Set();
  var mergePick = new Set();
  var $ = function (id) { return document.getElementById(id); };

  function plural(n, word) { return n + " " + word + (n === 1 ? "" : "s"); }

  function uniq(list) { return list.filter(function (x, i) { return list.indexOf(x) === i; }); }

  function fresh() {
    var episodes = new Map();
    DATA.episodes.forEach(function (e) { episodes.set(e[0], { modes: e[1].slice(), reason: e[2] }); });
    return {
      modes: DATA.modes.map(function (m) { return { name: m.name, description: m.description, edited: false }; }),
      episodes: episodes,
    };
  }

  function names(s) { return s.modes.map(function (m) { return m.name; }); }

  function mode(s, name) {
    var m = s.modes.find(function (x) { return x.name === name; });
    if (!m) throw new Error("no mode named '" + name + "'");
    return m;
  }

  function newName(s, name, allowed) {
    name = (name || "").trim();
    if (!name) throw new Error("type a name first");
    if (name.toLowerCase() === OUT) throw new Error("'" + OUT + "' is reserved for episodes that fit no mode");
    if (names(s).indexOf(name) >= 0 && (allowed || []).indexOf(name) < 0) {
      throw new Error("a mode named '" + name + "' exists already; merge the two instead");
    }
    return name;
  }

  function members(s, name) {
    var out = [];
    s.episodes.forEach(function (ep, id) { if (ep.modes.indexOf(name) >= 0) out.push(id); });
    return out;
  }

  function relabel(s, from, to) {
    s.episodes.forEach(function (ep) {
      if (ep.modes.indexOf(from) >= 0) ep.modes = uniq(ep.modes.map(function (m) { return m === from ? to : m; }));
    });
  }

  function apply(s, e) {
    if (e.op === "rename") {
      var m = mode(s, e.mode);
      var name = newName(s, e.name, [e.mode]);
      if (name === e.mode) throw new Error("'" + e.mode + "' already has that name");
      m.name = name; m.edited = true;
      relabel(s, e.mode, name);
    } else if (e.op === "merge") {
      if (e.modes.length < 2) throw new Error("tick at least two modes to merge");
      var parts = e.modes.map(function (n) { return mode(s, n); });
      var merged = newName(s, e.name, e.modes);
      var at = s.modes.indexOf(parts[0]);
      s.modes = s.modes.filter(function (x) { return parts.indexOf(x) < 0; });
      var largest = parts.slice().sort(function (a, b) {
        return members(s, b.name).length - members(s, a.name).length;
      })[0];
      s.modes.splice(at, 0, { name: merged, description: largest.description, edited: true });
      e.modes.forEach(function (n) { relabel(s, n, merged); });
    } else if (e.op === "split") {
      var src = mode(s, e.mode);
      if (!e.episodes.length) throw new Error("tick the episodes to split off first");
      var inMode = members(s, e.mode);
      e.episodes.forEach(function (id) {
        if (inMode.indexOf(id) < 0) throw new Error(id + " is not in '" + e.mode + "'");
      });
      var part = newName(s, e.name, []);
      if (members(s, e.mode).length <= e.episodes.length) {
        throw new Error("splitting every episode out of '" + e.mode + "' would leave it empty; rename it instead");
      }
      s.modes.splice(s.modes.indexOf(src) + 1, 0, { name: part, description: "Split by a person from '" + e.mode + "'.", edited: true });
      src.edited = true;
      e.episodes.forEach(function (id) {
        var ep = s.episodes.get(id);
        ep.modes = uniq(ep.modes.map(function (m) { return m === e.mode ? part : m; }));
      });
    } else if (e.op === "move") {
      if (e.to !== OUT) mode(s, e.to).edited = true;
      if (!e.episodes.length) throw new Error("tick the episodes to move first");
      e.episodes.forEach(function (id) {
        var ep = s.episodes.get(id);
        if (ep.modes.length === 1 && ep.modes[0] === e.to) throw new Error(id + " is in '" + e.to + "' already");
        ep.modes.forEach(function (m) { if (m !== OUT) mode(s, m).edited = true; });
        ep.modes = [e.to];
      });
    } else if (e.op === "not_a_failure") {
      var gone = mode(s, e.mode);
      s.modes = s.modes.filter(function (x) { return x !== gone; });
      members(s, e.mode).forEach(function (id) {
        var ep = s.episodes.get(id);
        ep.modes = ep.modes.filter(function (m) { return m !== e.mode; });
        if (!ep.modes.length) s.episodes.delete(id);
      });
    }
  }

  function current() {
    var s = fresh();
    edits.forEach(function (e) { apply(s, e); });
    return s;
  }

  function describe(e) {
    if (e.op === "rename") return "rename '" + e.mode + "' to '" + e.name + "'";
    if (e.op === "merge") return "merge " + e.modes.map(function (n) { return "'" + n + "'"; }).join(", ") + " into '" + e.name + "'";
    if (e.op === "split") return "split " + e.episodes.length + " episode(s) of '" + e.mode + "' into '" + e.name + "'";
    if (e.op === "move") return "move " + e.episodes.join(", ") + " to '" + e.to + "'";
    return "mark '" + e.mode + "' as not a failure" + (e.reason ? " (" + e.reason + ")" : "");
  }

  function doc() {
    return { schema_version: DATA.schema_version, source_run: DATA.run_name,
             source_fingerprint: DATA.fingerprint, edits: edits };
  }

  function record(e) {
    try {
      apply(current(), e);
    } catch (err) {
      $("edit-error").textContent = "Not recorded: " + err.message;
      return;
    }
    edits.push(e);
    picked.clear(); mergePick.clear();
    $("edit-error").textContent = "";
    render();
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "className") node.className = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c) node.appendChild(c); });
    return node;
  }

  function button(text, cls, onClick) {
    var b = el("button", { type: "button", className: cls, text: text });
    b.addEventListener("click", onClick);
    return b;
  }

  function tickedIn(s, name) {
    return members(s, name).filter(function (id) { return picked.has(id); }).sort();
  }

  function episodeList(s, name, box) {
    var filter = (filters[name] || "").toLowerCase();
    var ids = members(s, name).sort().filter(function (id) {
      return !filter || (id + " " + s.episodes.get(id).reason).toLowerCase().indexOf(filter) >= 0;
    });
    var list = el("ul", { className: "edit-episodes" });
    ids.slice(0, SHOWN_MAX).forEach(function (id) {
      var tick = el("input", { type: "checkbox", className: "ep-pick", value: id });
      tick.checked = picked.has(id);
      tick.addEventListener("change", function () { if (tick.checked) picked.add(id); else picked.delete(id); });
      list.appendChild(el("li", {}, [el("label", {}, [tick, el("b", { text: " " + id })]),
                                     el("span", { className: "muted", text: " " + s.episodes.get(id).reason })]));
    });
    box.appendChild(list);
    if (ids.length > SHOWN_MAX) {
      box.appendChild(el("p", { className: "muted", text: (ids.length - SHOWN_MAX) + " more; narrow the filter" }));
    }
  }

  function modeCard(s, name, isMode) {
    var ids = members(s, name);
    var info = isMode ? mode(s, name) : null;
    var card = el("div", { className: "mode edit-mode", "data-mode": name });
    var head = el("p", { className: "edit-head" });
    if (isMode) {
      var tick = el("input", { type: "checkbox", className: "merge-pick", title: "tick to merge" });
      tick.checked = mergePick.has(name);
      tick.addEventListener("change", function () { if (tick.checked) mergePick.add(name); else mergePick.delete(name); });
      head.appendChild(tick);
    }
    head.appendChild(el("b", { text: " " + name }));
    head.appendChild(el("span", { className: "muted", text: " · " + plural(ids.length, "episode") }));
    if (info && info.edited) head.appendChild(el("span", { className: "tag person", text: "edited" }));
    card.appendChild(head);
    if (info && info.description) card.appendChild(el("p", { className: "kw", text: info.description }));
    if (isMode) {
      var rename = el("input", { className: "rename-name", placeholder: "new name", size: "24" });
      var reason = el("input", { className: "naf-reason", placeholder: "why not a failure (optional)", size: "26" });
      card.appendChild(el("p", { className: "edit-row" }, [
        rename, button("Rename", "rename-btn", function () {
          record({ op: "rename", mode: name, name: rename.value.trim() });
        }),
        reason, button("Not a failure", "naf-btn", function () {
          record({ op: "not_a_failure", mode: name, reason: reason.value.trim() });
        }),
      ]));
    }
    var details = el("details", {});
    details.open = openModes.has(name);
    details.appendChild(el("summary", { text: plural(ids.length, "episode") + " — tick some to split or move them" }));
    var box = el("div", {});
    details.appendChild(box);
    details.addEventListener("toggle", function () {
      if (details.open) { openModes.add(name); fill(); } else { openModes.delete(name); box.textContent = ""; }
    });
    function fill() {
      box.textContent = "";
      var filter = el("input", { className: "ep-filter", placeholder: "filter episodes", size: "24" });
      filter.value = filters[name] || "";
      var listBox = el("div", {});
      filter.addEventListener("input", function () { filters[name] = filter.value; listBox.textContent = ""; episodeList(s, name, listBox); });
      var split = el("input", { className: "split-name", placeholder: "new mode name", size: "22" });
      var target = el("select", { className: "move-to" });
      names(s).concat([OUT]).filter(function (n) { return n !== name; }).forEach(function (n) {
        target.appendChild(el("option", { value: n, text: n }));
      });
      var row = el("p", { className: "edit-row" }, [filter, el("span", { text: " with the ticked: " })]);
      if (isMode) {
        row.appendChild(split);
        row.appendChild(button("Split into new mode", "split-btn", function () {
          record({ op: "split", mode: name, episodes: tickedIn(s, name), name: split.value.trim() });
        }));
      }
      row.appendChild(el("span", { text: " move to " }));
      row.appendChild(target);
      row.appendChild(button("Move", "move-btn", function () {
        record({ op: "move", episodes: tickedIn(s, name), to: target.value });
      }));
      box.appendChild(row);
      box.appendChild(listBox);
      episodeList(s, name, listBox);
    }
    if (details.open) fill();
    card.appendChild(details);
    return card;
  }

  function render() {
    var s = current();
    var box = $("edit-modes");
    box.textContent = "";
    s.modes.forEach(function (m) { box.appendChild(modeCard(s, m.name, true)); });
    if (members(s, OUT).length) box.appendChild(modeCard(s, OUT, false));
    var log = $("edit-log");
    log.textContent = "";
    edits.forEach(function (e) { log.appendChild(el("li", { text: describe(e) })); });
    $("edit-count").textContent = String(edits.length);
    $("edits-json").value = JSON.stringify(doc(), null, 2) + "\n";
    $("undo-btn").disabled = $("export-btn").disabled = !edits.length;
    try { window.localStorage.setItem(STORE, JSON.stringify(edits)); } catch (err) { /* file:// without storage */ }
  }

  function exportFile() {
    var blob = new Blob([$("edits-json").value], { type: "application/json" });
    var link = el("a", { href: URL.createObjectURL(blob), download: "edits.json" });
    document.body.appendChild(link);
    link.click();
    setTimeout(function () { URL.revokeObjectURL(link.href); link.remove(); }, 2000);
  }

  $("merge-btn").addEventListener("click", function () {
    var s = current();
    var ticked = names(s).filter(function (n) { return mergePick.has(n); });
    record({ op: "merge", modes: ticked, name: $("merge-name").value.trim() });
    if (!$("edit-error").textContent) $("merge-name").value = "";
  });
  $("undo-btn").addEventListener("click", function () { edits.pop(); $("edit-error").textContent = ""; render(); });
  $("export-btn").addEventListener("click", exportFile);
  var toggle = $("edit-toggle");
  toggle.hidden = false;
  toggle.addEventListener("click", function () {
    var editor = $("editor");
    editor.hidden = !editor.hidden;
    toggle.textContent = editor.hidden ? "Edit taxonomy" : "Hide editor";
    if (!editor.hidden) render();
  });
  try {  // edits made earlier in this browser on this same taxonomy come back
    var kept = JSON.parse(window.localStorage.getItem(STORE) || "[]");
    kept.forEach(function (e) { apply(current(), e); edits.push(e); });
  } catch (err) { edits = []; }
  render();
})();
{% endraw %}
