// Shared by the agent bar and the console: DOM helpers, API calls, keyed redraws, polling.
// Text goes in with textContent only, never as HTML.
var PR = (function () {
  "use strict";
  var CSRF = document.querySelector('meta[name="csrf-token"]').content;

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    for (var key in attrs || {}) { node.setAttribute(key, attrs[key]); }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  function setText(node, text) {
    text = text === undefined || text === null ? "" : String(text);
    if (node.textContent !== text) node.textContent = text;
  }

  function setAttr(node, name, value) {
    value = String(value);
    if (node.getAttribute(name) !== value) node.setAttribute(name, value);
  }

  function two(n) { return (n < 10 ? "0" : "") + n; }

  function waiting(s) {
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + two(s % 60) + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h " + two(Math.floor(s % 3600 / 60)) + "m";
    return Math.floor(s / 86400) + "d " + Math.floor(s % 86400 / 3600) + "h";
  }

  function stamp(iso) {
    if (!iso) return "";
    var d = new Date(iso);
    return d.getUTCFullYear() + "-" + two(d.getUTCMonth() + 1) + "-" + two(d.getUTCDate()) +
      " " + two(d.getUTCHours()) + ":" + two(d.getUTCMinutes()) + ":" + two(d.getUTCSeconds());
  }

  function clock(iso) { return iso ? stamp(iso).slice(11) : ""; }

  function who(name, address) { return name ? name + " <" + address + ">" : address; }

  // A JSON call to the API with the session cookie; rejects with the API's `detail`.
  function call(method, url, body) {
    var options = {method: method, credentials: "same-origin",
                   headers: {"Accept": "application/json", "X-CSRFToken": CSRF}};
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return fetch(url, options).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (!response.ok) {
          var detail = data.detail;
          if (Array.isArray(detail)) detail = detail.map(function (d) { return d.msg; }).join("; ");
          var error = new Error(detail || "HTTP " + response.status);
          error.status = response.status;
          throw error;
        }
        return data;
      });
    });
  }

  function flash(message, kind) {
    var box = document.getElementById("flash");
    var p = el("p", {"class": kind || "ok"}, message);
    box.appendChild(p);
    window.setTimeout(function () { if (p.parentNode) p.parentNode.removeChild(p); }, 5000);
  }

  // Redraw the keyed children of `parent` from `items` without replacing the ones that
  // stay (so a half-typed reason or an open select survives the next refresh). Children
  // without data-key (a caption, a thead) stay first, untouched.
  function sync(parent, items, keyOf, create, update, empty) {
    var existing = {};
    var offset = 0;
    Array.prototype.forEach.call(parent.children, function (child) {
      var key = child.getAttribute("data-key");
      if (key === null) offset += 1; else existing[key] = child;
    });
    var wanted = items.map(function (item) {
      var key = String(keyOf(item));
      var node = existing[key];
      if (!node) { node = create(item); node.setAttribute("data-key", key); }
      delete existing[key];
      update(node, item);
      return node;
    });
    if (!wanted.length && empty) {
      var placeholder = existing.__empty || empty();
      placeholder.setAttribute("data-key", "__empty");
      delete existing.__empty;
      wanted.push(placeholder);
    }
    Object.keys(existing).forEach(function (key) { parent.removeChild(existing[key]); });
    wanted.forEach(function (node, i) {
      var at = parent.children[offset + i] || null;
      if (at !== node) parent.insertBefore(node, at);
    });
  }

  function emptyRow(columns, text) {
    return function () {
      var tr = el("tr", {"class": "empty"});
      tr.appendChild(el("td", {colspan: String(columns)}, text));
      return tr;
    };
  }

  // Seconds since the data on screen was fetched (counters tick between answers: while
  // nothing changes the server answers 304 and the last data is drawn again).
  var fetchedAt = Date.now();
  function age() { return Math.max(0, Math.round((Date.now() - fetchedAt) / 1000)); }

  // A countdown to a deadline given as seconds left when fetched: "12m 05s left" or "late".
  function left(secondsLeft) {
    if (secondsLeft === null || secondsLeft === undefined) return "";
    var s = secondsLeft - age();
    return s > 0 ? waiting(s) + " left" : "late by " + waiting(-s);
  }

  // Fetch `url` every second and hand the JSON to `render`; show when it stops working.
  // Sends the last ETag back (If-None-Match): 304 means "as before". Returns a function
  // that refreshes at once (after an action).
  function poll(url, render) {
    var conn = document.getElementById("connection");
    var lost = false, busy = false, again = false, timer = null, tag = null, last = null;
    function get() {
      var headers = {"Accept": "application/json"};
      if (tag && last) headers["If-None-Match"] = tag;
      return fetch(url, {credentials: "same-origin", cache: "no-store", headers: headers})
        .then(function (response) {
          if (response.status === 304 && last) return last;
          if (!response.ok) {
            var error = new Error("HTTP " + response.status);
            error.status = response.status;
            throw error;
          }
          tag = response.headers.get("ETag");
          return response.json().then(function (data) { last = data; fetchedAt = Date.now(); return data; });
        });
    }
    function tick() {
      if (busy) { again = true; return; }
      busy = true;
      window.clearTimeout(timer);
      get()
        .then(function (data) {
          render(data);
          if (lost || !document.getElementById("updated")) {
            conn.className = "";
            conn.textContent = "Updated ";
            conn.appendChild(el("time", {id: "updated"}));
            lost = false;
          }
          var updated = document.getElementById("updated");
          var when = new Date(new Date(data.now).getTime() + age() * 1000).toISOString();
          updated.setAttribute("datetime", when);
          updated.textContent = clock(when) + " UTC";
        })
        .catch(function (err) {
          if (lost) return;
          lost = true;
          conn.className = "lost";
          conn.textContent = "Not updating (" +
            (err.status === 401 ? "not logged in" : err.message || "offline") + ") — retrying…";
        })
        .then(function () {
          busy = false;
          if (again) { again = false; tag = null; tick(); } else { timer = window.setTimeout(tick, 1000); }
        });
    }
    timer = window.setTimeout(tick, 1000);
    return function () { tag = null; tick(); };
  }

  // Keyboard shortcuts: single keys, ignored while typing in a field or with a modifier.
  function shortcuts(map) {
    document.addEventListener("keydown", function (event) {
      if (event.altKey || event.ctrlKey || event.metaKey || event.defaultPrevented) return;
      var target = event.target;
      var tag = target && target.tagName;
      if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || (target && target.isContentEditable)) return;
      var action = map[event.key.toLowerCase()];
      if (action) { event.preventDefault(); action(); }
    });
  }

  // Run `action` (a promise) with `button` disabled; report the result.
  function act(button, action, done) {
    button.disabled = true;
    return action()
      .then(function (data) { if (done) flash(done(data), "ok"); return data; })
      .catch(function (err) { flash(err.message, "error"); })
      .then(function (data) { button.disabled = false; return data; });
  }

  return {el: el, setText: setText, setAttr: setAttr, waiting: waiting, stamp: stamp,
          clock: clock, who: who, call: call, flash: flash, sync: sync, emptyRow: emptyRow,
          poll: poll, act: act, age: age, left: left, shortcuts: shortcuts};
})();
