// Replies the mail server refused for good, on the supervisor console: drawn from
// GET /api/failed-replies every 2 s; send again, edit then send, or end with a code.
(function () {
  "use strict";
  var el = PR.el, setText = PR.setText;
  var section = document.getElementById("failed-replies-section");
  if (!section) { return; }
  var URL = section.dataset.url;
  var CODES = section.dataset.codes;
  var DETAIL = section.dataset.detail;
  var codes = [];

  function act(card, item, button, path, body, message) {
    PR.act(button, function () {
      return PR.call("POST", URL + "/" + item.guid + "/" + path, body);
    }, function () { return message; }).then(function (data) {
      if (data) { card.remove(); render(data); }
    });
  }

  function create(item) {
    var card = el("article", {"class": "card approval failed-reply", "data-failed": item.guid,
                              "aria-label": "Reply not sent: " + (item.subject || "(no subject)")});
    var head = el("header");
    var h3 = el("h3");
    h3.appendChild(el("a", {href: DETAIL.replace("00000000-0000-0000-0000-000000000000", item.guid)},
                      item.subject || "(no subject)"));
    head.appendChild(h3);
    head.appendChild(el("span", {"class": "pill ended"}, "not sent"));
    card.appendChild(head);
    var dl = el("dl");
    [["Customer", PR.who(item.customer_name, item.customer)],
     ["Agent", PR.who(item.agent_name, item.agent || "")],
     ["Why", item.reason || "—"],
     ["Failed", item.failed_at ? PR.stamp(item.failed_at) : "—"]].forEach(function (pair) {
      dl.appendChild(el("dt", {}, pair[0]));
      dl.appendChild(el("dd", {}, pair[1]));
    });
    card.appendChild(dl);
    card.appendChild(el("pre", {"class": "reply"}, item.text || "(empty reply)"));

    var actions = el("div", {"class": "actions"});
    var resend = el("button", {type: "button", "class": "primary", "data-action": "resend"}, "Send again");
    resend.addEventListener("click", function () {
      act(card, item, resend, "resend", undefined, "Sending the reply again");
    });
    var edit = el("button", {type: "button", "data-action": "edit"}, "Edit then send");
    var code = el("select", {name: "code", "aria-label": "Wrap-up code"});
    code.appendChild(el("option", {value: ""}, "Wrap-up code…"));
    codes.forEach(function (c) { code.appendChild(el("option", {value: c.code}, c.label)); });
    var end = el("button", {type: "button", "class": "danger", "data-action": "end"}, "End");
    end.addEventListener("click", function () {
      if (!code.value) { PR.flash("Choose a wrap-up code first", "error"); code.focus(); return; }
      act(card, item, end, "end", {code: code.value}, "Ended without a reply");
    });
    [resend, edit, code, end].forEach(function (n) { actions.appendChild(n); });
    card.appendChild(actions);

    var form = el("div", {"class": "edit", "data-part": "edit"});
    form.hidden = true;
    var text = el("textarea", {name: "text", "aria-label": "Reply text to send"});
    text.value = item.text;
    var send = el("button", {type: "button", "class": "primary", "data-action": "send-edited"}, "Send edited reply");
    send.addEventListener("click", function () {
      if (!text.value.trim()) { PR.flash("The edited reply is empty", "error"); text.focus(); return; }
      act(card, item, send, "edit", {text: text.value}, "Sending your edited reply");
    });
    edit.addEventListener("click", function () { form.hidden = false; edit.hidden = true; text.focus(); });
    form.appendChild(text);
    form.appendChild(send);
    card.appendChild(form);
    return card;
  }

  function render(data) {
    setText(document.getElementById("failed-count"), data.items.length ? "(" + data.items.length + ")" : "");
    PR.sync(document.getElementById("failed-replies"), data.items, function (i) { return i.guid; },
            create, function () {},
            function () { return el("p", {"class": "muted card"}, "Every reply went out."); });
  }

  function refresh() {
    PR.call("GET", URL).then(render).catch(function () {});
  }

  PR.call("GET", CODES).then(function (found) { codes = found; }).catch(function () {}).then(function () {
    refresh();
    window.setInterval(refresh, 2000);
  });
})();
