// The Gatehouse Slack sandbox page: renders what the sandbox stores (Block Kit, threads,
// ephemerals, modals, App Home) for this browser's user, and sends what you do to the bot through
// the sandbox's /sandbox/api. Every piece of text from the bot becomes a text node: never parsed as HTML.
// Who you are is this browser's (the sandbox's cookie): requests name no user, the server reads it.
"use strict";

const ui = {
  user: null,        // this browser's user id, as the server last said
  channel: null,     // the open channel id
  home: false,       // App Home open instead of a channel
  thread: null,      // ts of the open thread
  version: -1,       // the sandbox version the page last rendered
  snapshot: null,
  modalKey: null,    // id + hash of the rendered modal (re-rendering it would lose what you typed)
  refreshSerial: 0,
  seenAnswers: new Set(),  // ts of the ephemerals already shown beside a clicked message
  focusTs: null,     // `?ts=`: the message to open the channel on, until it is shown
  anchor: null,      // {channel, ts}: the linked message the view stays on until a scroll
  identity: Promise.resolve(),  // the picker's last "who you are" request, until it is answered
};
ui.channel = new URLSearchParams(location.search).get("channel");

let EMOJI = {};  // :shortcode: → emoji, from /static/emoji.json (loaded before the first render)

// -- DOM helpers ---------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function unescapeSlack(text) {
  return String(text).replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");
}

function emojify(text) {
  return text.replace(/:([a-z0-9_+-]+):/g, (all, name) => EMOJI[name] || all);
}

function textNode(text) {
  return document.createTextNode(emojify(unescapeSlack(text)));
}

function userName(id) {
  const user = (ui.snapshot?.users || []).find((u) => u.id === id);
  if (user) return user.name;
  if (ui.snapshot && id === ui.snapshot.bot.id) return ui.snapshot.bot.name;
  return id;
}

function channelName(id) {
  const channel = (ui.snapshot?.channels || []).find((c) => c.id === id);
  return channel ? channel.name : id;
}

// -- mrkdwn: *bold*, _italic_, ~strike~, `code`, ```pre```, <url|text>, <@U…>, <#C…>, <!subteam^…>

const INLINE = [
  { kind: "code", re: /`([^`\n]+)`/ },
  { kind: "angle", re: /<([^<>\n]+)>/ },
  { kind: "bold", re: /(^|[^\w*])\*([^*\n]+)\*(?=$|[^\w*])/ },
  { kind: "italic", re: /(^|[^\w])_([^_\n]+)_(?=$|[^\w])/ },
  { kind: "strike", re: /(^|[^\w~])~([^~\n]+)~(?=$|[^\w~])/ },
];

function safeUrl(url) {
  const raw = unescapeSlack(url);
  if (/^(https?:|mailto:)/i.test(raw)) return raw;
  if (raw.startsWith("/files/")) return raw;
  return null;
}

function angle(inner) {
  const [target, label] = inner.split("|", 2);
  if (target.startsWith("@")) {
    return el("span", { class: "mention" }, "@" + (label || userName(target.slice(1))));
  }
  if (target.startsWith("#")) {
    return el("span", { class: "mention" }, "#" + (label || channelName(target.slice(1))));
  }
  if (target.startsWith("!subteam^")) {
    const id = target.slice("!subteam^".length);
    const handle = label || "@" + ((ui.snapshot?.groups || {})[id] || id);
    return el("span", { class: "mention" }, handle.startsWith("@") ? handle : "@" + handle);
  }
  if (target.startsWith("!date^")) {
    const seconds = Number(target.split("^")[1]);
    return document.createTextNode(unescapeSlack(label || new Date(seconds * 1000).toLocaleString()));
  }
  if (target.startsWith("!")) {
    return el("span", { class: "mention" }, "@" + (label || target.slice(1).split("^")[0]));
  }
  const href = safeUrl(target);
  const text = unescapeSlack(label || target);
  if (!href) return document.createTextNode(text);
  return el("a", { href, target: "_blank", rel: "noopener noreferrer" }, text);
}

function inline(text, parent) {
  while (text) {
    let best = null;
    for (const rule of INLINE) {
      const match = rule.re.exec(text);
      if (!match) continue;
      const lead = rule.kind === "bold" || rule.kind === "italic" || rule.kind === "strike" ? match[1].length : 0;
      const start = match.index + lead;
      if (best === null || start < best.start) best = { rule, match, start, lead };
    }
    if (best === null) {
      parent.append(textNode(text));
      return;
    }
    const { rule, match, start, lead } = best;
    if (start > 0) parent.append(textNode(text.slice(0, start)));
    if (rule.kind === "code") parent.append(el("code", {}, unescapeSlack(match[1])));
    else if (rule.kind === "angle") parent.append(angle(match[1]));
    else {
      const tag = { bold: "strong", italic: "em", strike: "s" }[rule.kind];
      const node = el(tag, {});
      inline(match[2], node);
      parent.append(node);
    }
    text = text.slice(match.index + match[0].length);
    void lead;
  }
}

function mrkdwn(text, tag = "div") {
  const node = el(tag, { class: "mrkdwn" });
  const parts = String(text || "").split(/```/);
  parts.forEach((part, index) => {
    if (index % 2 === 1 && index < parts.length - 1) {
      node.append(el("pre", {}, unescapeSlack(part.replace(/^\n/, ""))));
    } else {
      inline(index % 2 === 1 ? "```" + part : part, node);
    }
  });
  return node;
}

function textObject(obj, tag = "div") {
  if (!obj) return null;
  if (typeof obj === "string") return mrkdwn(obj, tag);
  if (obj.type === "mrkdwn") return mrkdwn(obj.text, tag);
  return el(tag, { class: "mrkdwn" }, emojify(obj.text || ""));
}

function plain(obj) {
  if (!obj) return "";
  return typeof obj === "string" ? obj : emojify(obj.text || "");
}

// -- Block Kit --------------------------------------------------------------------------------

// `where` says what a click is on: {ts, ephemeral} for a message, {view_id} for a view.
function renderBlocks(blocks, where, errors) {
  const out = el("div", { class: "blocks" });
  for (const block of blocks || []) out.append(renderBlock(block, where, errors || {}));
  return out;
}

function renderBlock(block, where, errors) {
  const bid = block.block_id;
  switch (block.type) {
    case "header":
      return el("div", { class: "block block-header" }, plain(block.text));
    case "divider":
      return el("hr", { class: "divider" });
    case "section": {
      const main = el("div", { class: "section-main" });
      if (block.text) main.append(textObject(block.text));
      if (block.fields) main.append(el("div", { class: "fields" }, block.fields.map((f) => textObject(f))));
      const node = el("div", { class: "block section" }, main);
      if (block.accessory) node.append(renderElement(block.accessory, bid, where));
      return node;
    }
    case "context":
      return el("div", { class: "block context" }, (block.elements || []).map((e) =>
        e.type === "image" ? el("img", { src: e.image_url, alt: e.alt_text || "" }) : textObject(e, "span")));
    case "image":
      return el("figure", { class: "block block-image" },
        block.title ? el("div", { class: "title" }, plain(block.title)) : null,
        el("img", { src: block.image_url || (block.slack_file && block.slack_file.url) || "", alt: block.alt_text || "" }));
    case "actions":
      return el("div", { class: "block actions" }, (block.elements || []).map((e) => renderElement(e, bid, where)));
    case "input":
      return renderInput(block, errors[bid]);
    case "rich_text":
      return el("div", { class: "block mrkdwn" }, richText(block));
    default:
      return el("div", { class: "block unknown-block" }, `[${block.type} block]`);
  }
}

function richText(node) {
  if (typeof node.text === "string") return node.text;
  return (node.elements || []).map(richText).join(node.type === "rich_text" ? "\n" : "");
}

function renderElement(element, blockId, where) {
  if (element.type === "button") {
    const button = el("button", {
      type: "button",
      class: "sk" + (element.style ? " " + element.style : ""),
      "data-action-id": element.action_id,
      "data-value": element.value,
      "data-block-id": blockId,
    }, plain(element.text));
    button.addEventListener("click", () => {
      if (element.url) {
        const href = safeUrl(element.url);
        if (href) window.open(href, "_blank", "noopener");
      }
      const send = () => click(button, { action_id: element.action_id, block_id: blockId, value: element.value, ...where });
      if (element.confirm) showConfirm(element.confirm, send);
      else send();
    });
    return button;
  }
  if (element.type === "image") {
    return el("img", { class: "accessory-image", src: element.image_url, alt: element.alt_text || "", width: 64 });
  }
  if (element.type === "static_select" || element.type === "overflow") {
    const select = el("select", { "data-action-id": element.action_id, "data-block-id": blockId },
      el("option", { value: "" }, plain(element.placeholder) || "Choose…"), optionNodes(element));
    select.addEventListener("change", () => {
      if (select.value) click(select, { action_id: element.action_id, block_id: blockId, value: select.value, ...where });
    });
    return select;
  }
  return el("span", { class: "unknown-block" }, `[${element.type}]`);
}

function allOptions(element) {
  const options = [...(element.options || [])];
  for (const group of element.option_groups || []) options.push(...(group.options || []));
  return options;
}

function optionNodes(element, selected) {
  const chosen = new Set((selected || []).map((o) => o && o.value));
  const option = (o) => el("option", { value: o.value, selected: chosen.has(o.value) }, plain(o.text));
  if (element.option_groups) {
    return element.option_groups.map((g) => el("optgroup", { label: plain(g.label) }, (g.options || []).map(option)));
  }
  return (element.options || []).map(option);
}

// -- modal inputs -----------------------------------------------------------------------------

function renderInput(block, error) {
  const e = block.element || {};
  const ids = { "data-block-id": block.block_id, "data-action-id": e.action_id, "data-type": e.type };
  const fieldId = `in-${block.block_id}-${e.action_id}`;
  let control;
  switch (e.type) {
    case "plain_text_input":
      control = e.multiline
        ? el("textarea", { ...ids, id: fieldId, placeholder: plain(e.placeholder), maxlength: e.max_length }, e.initial_value || "")
        : el("input", { ...ids, id: fieldId, type: "text", placeholder: plain(e.placeholder), maxlength: e.max_length, value: e.initial_value || "" });
      break;
    case "number_input":
      control = el("input", { ...ids, id: fieldId, type: "text", inputmode: e.is_decimal_allowed ? "decimal" : "numeric", placeholder: plain(e.placeholder), value: e.initial_value || "" });
      break;
    case "email_text_input":
    case "url_text_input":
      control = el("input", { ...ids, id: fieldId, type: e.type === "email_text_input" ? "email" : "url", value: e.initial_value || "" });
      break;
    case "datepicker":
      control = el("input", { ...ids, id: fieldId, type: "date", value: e.initial_date || "" });
      break;
    case "timepicker":
      control = el("input", { ...ids, id: fieldId, type: "time", value: e.initial_time || "" });
      break;
    case "static_select":
      control = el("select", { ...ids, id: fieldId }, el("option", { value: "" }, plain(e.placeholder) || "Choose…"),
        optionNodes(e, e.initial_option ? [e.initial_option] : []));
      break;
    case "multi_static_select":
      control = el("select", { ...ids, id: fieldId, multiple: true }, optionNodes(e, e.initial_options || []));
      break;
    case "users_select":
      control = el("select", { ...ids, id: fieldId }, el("option", { value: "" }, "Choose a person…"),
        (ui.snapshot?.users || []).map((u) => el("option", { value: u.id, selected: u.id === e.initial_user }, u.name)));
      break;
    case "radio_buttons":
    case "checkboxes": {
      const kind = e.type === "radio_buttons" ? "radio" : "checkbox";
      const initial = new Set((e.initial_options || (e.initial_option ? [e.initial_option] : [])).map((o) => o.value));
      control = el("div", { class: "choices", role: kind === "radio" ? "radiogroup" : "group" },
        allOptions(e).map((o, i) => el("label", { class: "choice" },
          el("input", { ...ids, id: i === 0 ? fieldId : undefined, type: kind, name: `${block.block_id}/${e.action_id}`, value: o.value, checked: initial.has(o.value) }),
          el("span", {}, plain(o.text)),
          o.description ? el("span", { class: "hint" }, plain(o.description)) : null)));
      break;
    }
    default:
      control = el("div", { class: "unknown-block" }, `[${e.type} input]`);
  }
  return el("div", { class: "block input-block" + (error ? " has-error" : ""), "data-input-block": block.block_id },
    el("label", { class: "label", for: fieldId }, plain(block.label), block.optional ? el("span", { class: "optional" }, " (optional)") : null),
    control,
    block.hint ? el("div", { class: "hint" }, plain(block.hint)) : null,
    error ? el("div", { class: "input-error", "data-testid": "input-error", "data-block-id-error": block.block_id }, error) : null);
}

function modalValues(modal, view) {
  const values = {};
  for (const block of view.blocks || []) {
    if (block.type !== "input" || !block.element) continue;
    const e = block.element;
    const scope = modal.querySelector(`[data-input-block="${CSS.escape(block.block_id)}"]`);
    if (!scope) continue;
    let value = null;
    if (e.type === "radio_buttons") {
      const checked = scope.querySelector("input:checked");
      value = checked ? checked.value : null;
    } else if (e.type === "checkboxes") {
      value = [...scope.querySelectorAll("input:checked")].map((i) => i.value);
    } else if (e.type === "multi_static_select") {
      value = [...scope.querySelector("select").selectedOptions].map((o) => o.value);
    } else {
      const control = scope.querySelector("input, textarea, select");
      value = control && control.value !== "" ? control.value : null;
    }
    values[block.block_id] = { [e.action_id]: value };
  }
  return values;
}

function renderModal(view) {
  const layer = document.getElementById("layer");
  const existing = document.querySelector('[data-testid="modal"]');
  if (!view) {
    if (existing) existing.closest(".overlay").remove();
    ui.modalKey = null;
    return;
  }
  const key = `${view.id}/${view.hash}`;
  if (existing && ui.modalKey === key) {
    updateModalErrors(existing, view.errors || {});
    return;
  }
  if (existing) existing.closest(".overlay").remove();
  ui.modalKey = key;
  const close = () => api("close", { view_id: view.id }).then(refresh);
  const modal = el("div", { class: "dialog", "data-testid": "modal", "data-view-id": view.id, role: "dialog", "aria-modal": "true" },
    el("header", {}, el("span", {}, plain(view.title)), el("button", { type: "button", "aria-label": "Close", onclick: close }, "✕")),
    el("form", { class: "content", onsubmit: (event) => { event.preventDefault(); } },
      renderBlocks(view.blocks, { view_id: view.id }, view.errors)),
    el("footer", {},
      el("button", { type: "button", class: "sk", "data-testid": "modal-close", onclick: close }, plain(view.close) || "Cancel"),
      view.submit ? el("button", {
        type: "button", class: "sk primary", "data-testid": "modal-submit",
        onclick: (event) => submitModal(event.currentTarget, modal, view),
      }, plain(view.submit)) : null));
  modal.closeModal = close;  // Escape closes it as ✕ does
  layer.append(el("div", { class: "overlay" }, modal));
}

function updateModalErrors(modal, errors) {
  for (const scope of modal.querySelectorAll("[data-input-block]")) {
    const blockId = scope.getAttribute("data-input-block");
    const old = scope.querySelector('[data-testid="input-error"]');
    if (old) old.remove();
    scope.classList.toggle("has-error", Boolean(errors[blockId]));
    if (errors[blockId]) scope.append(el("div", { class: "input-error", "data-testid": "input-error" }, errors[blockId]));
  }
}

async function submitModal(button, modal, view) {
  button.disabled = true;
  try {
    const answer = await api("submit", { view_id: view.id, values: modalValues(modal, view) });
    if (answer.modal && answer.modal.id === view.id) updateModalErrors(modal, answer.modal.errors || {});
  } finally {
    button.disabled = false;
  }
  await refresh();
}

function showConfirm(confirm, onConfirm) {
  const layer = document.getElementById("layer");
  const overlay = el("div", { class: "overlay" });
  const done = () => overlay.remove();
  const dialog = el("div", { class: "dialog confirm-dialog", "data-testid": "confirm", role: "alertdialog" },
    el("header", {}, el("span", {}, plain(confirm.title) || "Are you sure?")),
    el("div", { class: "content" }, textObject(confirm.text)),
    el("footer", {},
      el("button", { type: "button", class: "sk", "data-testid": "confirm-cancel", onclick: done }, plain(confirm.deny) || "Cancel"),
      el("button", {
        type: "button", class: "sk " + (confirm.style === "danger" ? "danger" : "primary"), "data-testid": "confirm-ok",
        onclick: () => { done(); onConfirm(); },
      }, plain(confirm.confirm) || "Yes")));
  dialog.cancelConfirm = done;  // Escape cancels it as its deny button does
  overlay.append(dialog);
  layer.append(overlay);
  dialog.querySelector('[data-testid="confirm-ok"]').focus();
}

// Escape closes what is on top: a confirm dialog first, else the modal (as Slack's ✕).
function closeTopDialog() {
  const confirms = document.querySelectorAll('[data-testid="confirm"]');
  if (confirms.length) {
    confirms[confirms.length - 1].cancelConfirm();
    return true;
  }
  const modal = document.querySelector('[data-testid="modal"]');
  if (modal && modal.closeModal) {
    modal.closeModal();
    return true;
  }
  return false;
}

// -- messages ---------------------------------------------------------------------------------

function timeOf(ts) {
  const date = new Date(parseFloat(ts) * 1000);
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function renderMessage(message, inThread) {
  const where = { ts: message.ts, ephemeral: Boolean(message.ephemeral), channel: message.channel };
  const author = userName(message.user);
  const isBot = message.user === ui.snapshot.bot.id || message.bot_id;
  const body = el("div", { class: "body" },
    message.ephemeral ? el("div", { class: "only-you" }, "Only visible to you") : null,
    el("div", { class: "meta" }, el("span", { class: "author" }, author), isBot ? el("span", { class: "app" }, "APP") : null,
      el("span", {}, timeOf(message.ts)), message.edited ? el("span", { class: "edited" }, " (edited)") : null));
  if (message.blocks && message.blocks.length) body.append(renderBlocks(message.blocks, where));
  else if (message.text) body.append(mrkdwn(message.text));
  for (const attachment of message.attachments || []) {
    body.append(el("div", { class: "attachment", style: `border-left: 4px solid #ddd; padding-left: 8px` },
      attachment.blocks ? renderBlocks(attachment.blocks, where) : mrkdwn(attachment.text || attachment.fallback || "")));
  }
  for (const file of message.files || []) {
    const isImage = /\.(png|jpe?g|gif|webp)$/i.test(file.name || "");
    body.append(el("figure", { class: "file" }, el("div", { class: "title" }, file.title || file.name),
      isImage ? el("img", { src: file.url, alt: file.title || file.name, "data-file-id": file.id })
        : el("a", { href: file.url, target: "_blank" }, file.name)));
  }
  if (!inThread && message.reply_count) {
    const count = message.reply_count;
    body.append(el("button", {
      type: "button", class: "thread-link", "data-testid": "thread-link",
      onclick: () => { ui.thread = message.ts; refresh(); },
    }, `${count} ${count === 1 ? "reply" : "replies"}`));
  }
  return el("div", {
    class: "message" + (message.ephemeral ? " ephemeral" : ""), "data-testid": "message", "data-ts": message.ts,
    "data-ephemeral": message.ephemeral ? "true" : undefined,
    "data-answers": message.answers,
  }, el("div", { class: "avatar" }, (author || "?").slice(0, 1).toUpperCase()), body);
}

// -- the page ---------------------------------------------------------------------------------

function render(snapshot) {
  ui.snapshot = snapshot;
  ui.user = snapshot.user;
  ui.channel = snapshot.channel;
  const picker = document.getElementById("user-picker");
  if (picker.options.length !== snapshot.users.length) {
    picker.replaceChildren(...snapshot.users.map((u) => el("option", { value: u.id }, u.name)));
  }
  picker.value = snapshot.user;
  const me = snapshot.users.find((u) => u.id === snapshot.user);
  document.getElementById("user-groups").textContent = me && me.groups.length ? me.groups.map((g) => "@" + g).join(", ") : "in no approver group";

  document.getElementById("channels").replaceChildren(...snapshot.channels.map((c) => el("a", {
    href: "#" + c.name, class: "nav-link" + (!ui.home && c.id === snapshot.channel ? " active" : ""), "data-channel": c.name, "data-channel-id": c.id,
    onclick: (event) => { event.preventDefault(); ui.channel = c.id; ui.home = false; ui.thread = null; refresh(); },
  }, "# " + c.name)));
  document.getElementById("home-link").classList.toggle("active", ui.home);

  const title = document.getElementById("title");
  const messages = document.getElementById("messages");
  const home = document.getElementById("home");
  const composer = document.getElementById("composer-form");
  if (ui.home) {
    title.textContent = "Gatehouse · App Home";
    messages.hidden = true;
    composer.hidden = true;
    home.hidden = false;
    home.replaceChildren(snapshot.home
      ? renderBlocks(snapshot.home.blocks, { view_id: snapshot.home.id })
      : el("div", { class: "empty" }, "Waiting for the bot to publish your Home tab…"));
  } else {
    title.textContent = "# " + channelName(snapshot.channel);
    home.hidden = true;
    messages.hidden = false;
    composer.hidden = false;
    const atBottom = messages.scrollHeight - messages.scrollTop - messages.clientHeight < 40;
    messages.replaceChildren(...(snapshot.messages.length
      ? snapshot.messages.map((m) => renderMessage(m, false))
      : [el("div", { class: "empty" }, "No messages yet. Try /gatehouse help below.")]));
    if (atBottom) messages.scrollTop = messages.scrollHeight;
    showLinkedMessage(messages, snapshot.channel);
    showNewAnswers(messages);
  }

  const thread = document.getElementById("thread");
  if (!ui.home && ui.thread && snapshot.thread) {
    thread.hidden = false;
    document.getElementById("thread-messages").replaceChildren(...snapshot.thread.map((m) => renderMessage(m, true)));
  } else {
    thread.hidden = true;
  }
  renderModal(snapshot.modal);
}

// `?channel=approvals&ts=…` opens the channel on that message (scrolled to it, flashing once),
// and keeps it there while the page re-renders (cards above it may grow as they update) until
// the person scrolls or changes channel, as a link into Slack stays on its message.
function showLinkedMessage(messages, channel) {
  const ts = ui.focusTs || (ui.anchor && ui.anchor.channel === channel ? ui.anchor.ts : null);
  if (!ts) return;
  const node = messages.querySelector(`[data-ts="${CSS.escape(ts)}"]`);
  if (!node) return;  // not posted yet: the next render tries again
  if (ui.focusTs) {
    ui.focusTs = null;
    ui.anchor = { channel, ts };
    node.classList.add("fresh");
  }
  node.classList.add("linked");
  node.scrollIntoView({ block: "start" });
}

// Scrolling by hand lets go of a linked message.
for (const kind of ["wheel", "touchmove"]) {
  document.getElementById("messages").addEventListener(kind, () => { ui.anchor = null; }, { passive: true });
}
document.addEventListener("keydown", (event) => {
  if (["PageUp", "PageDown", "ArrowUp", "ArrowDown", "Home", "End"].includes(event.key)) ui.anchor = null;
});

// An ephemeral that answers a click sits under the message clicked (the server orders it
// there); the first time it shows, it is scrolled into view and flashes, so the click's
// answer is seen where the click happened.
function showNewAnswers(messages) {
  let first = null;
  for (const node of messages.querySelectorAll('[data-answers]')) {
    const ts = node.getAttribute("data-ts");
    if (ui.seenAnswers.has(ts)) continue;
    ui.seenAnswers.add(ts);
    node.classList.add("fresh");
    first = first || node;
  }
  if (first) first.scrollIntoView({ block: "nearest" });
}

async function api(action, body) {
  // Who you are is a cookie the server sets: a command or a click sent before the picker's
  // request is answered would go out as the previous person.
  if (action !== "user") await ui.identity;
  const response = await fetch("/sandbox/api/" + action, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({ ok: false, error: `HTTP ${response.status}` }));
  if (!response.ok || answer.ok === false) {
    toast(answer.error || `the bot answered ${answer.status}: ${typeof answer.body === "string" ? answer.body : JSON.stringify(answer.body)}`);
  }
  return answer;
}

async function click(control, body) {
  control.disabled = true;
  try {
    await api("click", body);
  } finally {
    control.disabled = false;
  }
  await refresh();
}

function toast(text) {
  const node = document.getElementById("toast");
  node.textContent = text;
  node.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { node.hidden = true; }, 6000);
}

async function refresh() {
  const serial = ++ui.refreshSerial;
  await ui.identity;
  const query = new URLSearchParams();
  if (ui.channel) query.set("channel", ui.channel);
  if (ui.thread) query.set("thread", ui.thread);
  const response = await fetch("/sandbox/api/state?" + query);
  const snapshot = await response.json();
  if (serial !== ui.refreshSerial) return;  // a newer refresh is on its way
  if (!snapshot.ok) {
    toast(snapshot.error);
    if (response.status === 404 && ui.channel) {  // `?channel=` named none: the first one
      ui.channel = null;
      await refresh();
    }
    return;
  }
  ui.version = Math.max(ui.version, snapshot.version);
  const status = document.getElementById("connection");
  if (!status.classList.contains("down")) {  // the sandbox answered: live until a poll fails
    status.textContent = "live";
    status.className = "connection live";
  }
  render(snapshot);
}

async function listen() {
  const status = document.getElementById("connection");
  for (;;) {
    try {
      const response = await fetch(`/sandbox/api/events?since=${ui.version}&timeout=25`);
      const answer = await response.json();
      status.textContent = "live";
      status.className = "connection live";
      if (answer.version > ui.version) {
        ui.version = answer.version;
        await refresh();
      }
    } catch (error) {
      status.textContent = "sandbox unreachable, retrying…";
      status.className = "connection down";
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }
}

function openHome() {
  ui.home = true;
  ui.thread = null;
  api("home", {});
  refresh();
}

document.getElementById("user-picker").addEventListener("change", async (event) => {
  const chosen = api("user", { user: event.target.value });  // sets this browser's cookie
  ui.identity = chosen.then(() => undefined, () => undefined);
  const answer = await chosen;
  if (answer.ok) ui.user = answer.user;
  if (ui.home) await api("home", {});
  await refresh();
});
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && closeTopDialog()) event.preventDefault();
});
document.getElementById("menu-button").addEventListener("click", () => {
  const app = document.getElementById("app");
  const open = !app.classList.contains("menu-open");
  app.classList.toggle("menu-open", open);
  document.getElementById("menu-button").setAttribute("aria-expanded", String(open));
});
document.getElementById("main").addEventListener("click", (event) => {
  if (!event.target.closest("#menu-button")) document.getElementById("app").classList.remove("menu-open");
});
document.getElementById("sidebar").addEventListener("click", (event) => {
  // On a narrow screen the sidebar is a drawer: choosing a channel or App Home closes it.
  if (event.target.closest("a")) document.getElementById("app").classList.remove("menu-open");
});
document.getElementById("home-link").addEventListener("click", (event) => {
  event.preventDefault();
  openHome();
});
document.getElementById("thread-close").addEventListener("click", () => {
  ui.thread = null;
  refresh();
});
document.getElementById("composer-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = document.getElementById("composer");
  const text = input.value.trim();
  if (!text) return;
  input.value = "";
  await api("command", { channel: ui.channel, text });
  await refresh();
});

async function loadEmoji() {
  try {
    const response = await fetch("/static/emoji.json");
    EMOJI = await response.json();
  } catch (error) {
    toast(`the emoji table did not load (${error}); shortcodes show as text`);
  }
}

// `?channel=NAME` (or an id) opens that channel, `&ts=TS` on that message.
const linked = new URLSearchParams(location.search);
ui.channel = linked.get("channel") || null;
ui.focusTs = linked.get("ts") || null;

// `?as=bob` chose who you are (the server set the cookie); drop it so a reload keeps the choice
// the picker makes later.
if (new URLSearchParams(location.search).has("as")) {
  const url = new URL(location.href);
  url.searchParams.delete("as");
  history.replaceState(null, "", url.pathname + url.search + url.hash);
}

loadEmoji().then(refresh).then(listen);
