// The videochat-handshake browser demo. Sign in as anyone (the gateway serves this page only
// while it uses the development secret), see who has a socket on this gateway, ring people,
// answer, cancel, invite, merge, and watch every frame go by.
//
// Plain JavaScript, no build step: the gateway embeds this file. It speaks the WebSocket API of
// docs/protocol.md and nothing else; the two /demo/ endpoints only hand out tokens and list
// sockets.

const TYPE = {
  request: 'videochat:requestDirectVideochat',
  invite: 'videochat:invite',
  accept: 'videochat:acceptVideochatRequest',
  decline: 'videochat:declineVideochatRequest',
  merge: 'videochat:mergeToVideochat',
  requested: 'videochat:videochatRequested',
  directAccepted: 'videochat:directVideochatRequestAccepted',
  accepted: 'videochat:videochatAccepted',
  declined: 'videochat:videochatDeclined',
};
const EVENTS = new Set([TYPE.requested, TYPE.directAccepted, TYPE.accepted, TYPE.declined]);

const ERROR_NAMES = {
  1000: 'bad frame',
  1001: 'unknown type',
  1002: 'invalid data',
  1003: 'rate limited',
  1004: 'internal error',
  1021: 'user not found',
  10011: 'user not available',
  10012: 'request not found',
  10013: 'not allowed',
  10014: 'no longer pending',
  10015: 'videochat not found',
  10016: 'cannot call or invite that user',
};

const REASONS = {
  declined: 'the person called said no',
  cancelled: 'the caller hung up before an answer',
  timeout: 'nobody answered in time',
};

const PERMISSIONS = [
  'isOwner', 'isModerator', 'isPanelist', 'isPresenter',
  'isCoPresenter', 'isPromoted', 'isParticipant', 'isListener',
];

const LOG_LIMIT = 300;
const POLL_MS = 2000;

const state = {
  me: null, // {userId, firstName, lastName, avatar}
  token: null,
  ws: null,
  tab: Math.random().toString(36).slice(2, 8), // tells two tabs' event ids apart
  seq: 0,
  pending: new Map(), // event.id → {type, data, resolve}
  incoming: new Map(), // videochatRequestId → ring (event data + receivedAt)
  outgoing: new Map(), // videochatRequestId → {kind, target, videochatId, since}
  videochats: new Map(), // videochatId → credentials
  current: null, // videochatId
  answeredHere: new Set(), // request ids this tab accepted or merged
  people: new Map(), // userId → last User Simple seen
  online: [],
  onlineKey: '',
  pollTimer: null,
};

const $ = (selector) => document.querySelector(selector);

/** Builds an element; text is always text (names come from other people). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// ---------------------------------------------------------------------------------------------
// People

function displayName(user) {
  if (!user) return '';
  const name = [user.firstName, user.lastName].filter(Boolean).join(' ').trim();
  return name || user.id;
}

function remember(user) {
  if (user && user.id) state.people.set(user.id, user);
}

function nameOf(userId) {
  const user = state.people.get(userId);
  const name = user ? displayName(user) : '';
  return name && name !== userId ? `${name} (${userId})` : userId;
}

function initials(user) {
  const name = displayName(user) || '?';
  return name.split(/\s+/).map((part) => part[0]).join('').slice(0, 2).toUpperCase();
}

function avatar(user, size = 'normal') {
  const fallback = () =>
    h('span', { class: `avatar initials ${size}`, title: displayName(user) }, initials(user));
  if (!user || !user.avatar) return fallback();
  const img = h('img', { class: `avatar ${size}`, src: user.avatar, alt: displayName(user) });
  img.addEventListener('error', () => img.replaceWith(fallback()), { once: true });
  return img;
}

// ---------------------------------------------------------------------------------------------
// Signing in

async function signIn(profile) {
  $('#signin-error').hidden = true;
  let body;
  try {
    const response = await fetch('/demo/token', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(profile),
    });
    body = await response.json();
    if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  } catch (error) {
    $('#signin-error').textContent = `Cannot sign in: ${error.message}`;
    $('#signin-error').hidden = false;
    return;
  }
  state.me = { ...profile, userId: body.userId };
  state.token = body.token;
  // The server's own words, not only the page's.
  if (body.warning) $('#dev-warning').textContent = `${body.warning.charAt(0).toUpperCase()}${body.warning.slice(1)}.`;
  if (body.note) $('#dev-note').textContent = body.note;
  sessionStorage.setItem('videochat-demo-profile', JSON.stringify(profile));
  remember({ id: body.userId, firstName: profile.firstName, lastName: profile.lastName, avatar: profile.avatar });
  document.title = `${body.userId} — videochat demo`;
  $('#signin-card').hidden = true;
  for (const id of ['#me-card', '#online-card', '#videochat-card', '#endings-card']) {
    $(id).hidden = false;
  }
  const meUser = { id: body.userId, ...profile };
  $('#me-avatar').replaceChildren(avatar(meUser));
  $('#me-name').textContent = displayName(meUser);
  $('#me-id').textContent = body.userId;
  connect();
  pollOnline();
}

function signOut() {
  sessionStorage.removeItem('videochat-demo-profile');
  if (state.ws) state.ws.close(1000, 'signed out');
  location.href = '/';
}

// ---------------------------------------------------------------------------------------------
// The socket

function connect() {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const url = `${scheme}://${location.host}/ws?access_token=${encodeURIComponent(state.token)}`;
  const ws = new WebSocket(url);
  state.ws = ws;
  setStatus('connecting…', 'connecting');
  $('#reconnect').hidden = true;
  ws.addEventListener('open', () => {
    setStatus('connected', 'connected');
    note(`socket open as ${state.me.userId}`);
    refreshOnline();
  });
  ws.addEventListener('message', (message) => {
    let frame;
    try {
      frame = JSON.parse(message.data);
    } catch {
      note(`not JSON: ${message.data}`);
      return;
    }
    logFrame('in', frame);
    receive(frame);
  });
  ws.addEventListener('close', (event) => {
    if (state.ws !== ws) return;
    const why = event.code === 1006
      ? 'the connection failed or was refused (an expired token gets HTTP 401)'
      : `code ${event.code}${event.reason ? `: ${event.reason}` : ''}`;
    setStatus(`disconnected (${why})`, 'disconnected');
    note(`socket closed (${why})`);
    $('#reconnect').hidden = false;
    for (const { resolve, type } of state.pending.values()) {
      resolve({ type, error: { status: true, code: 0, message: 'socket closed before the answer' } });
    }
    state.pending.clear();
  });
}

function setStatus(text, kind) {
  const status = $('#status');
  status.textContent = text;
  status.dataset.state = kind;
}

/** Sends a request; resolves with its response frame (success or refusal). */
function send(type, data) {
  return new Promise((resolve) => {
    if (!state.ws || state.ws.readyState !== WebSocket.OPEN) {
      resolve({ type, error: { status: true, code: 0, message: 'not connected' } });
      return;
    }
    const id = `${state.me.userId}-${state.tab}-${++state.seq}`;
    const frame = { type, data, event: { id, date: Date.now() } };
    state.pending.set(id, { type, data, resolve });
    logFrame('out', frame);
    state.ws.send(JSON.stringify(frame));
  });
}

function receive(frame) {
  const id = frame.event && frame.event.id;
  if (id && state.pending.has(id) && !EVENTS.has(frame.type)) {
    const { resolve } = state.pending.get(id);
    state.pending.delete(id);
    resolve(frame);
    return;
  }
  switch (frame.type) {
    case TYPE.requested: return onRequested(frame.data);
    case TYPE.directAccepted: return onDirectAccepted(frame.data);
    case TYPE.accepted: return onAccepted(frame.data);
    case TYPE.declined: return onDeclined(frame.data);
    default:
      if (frame.error && frame.error.status) refused('A frame', frame);
  }
}

const failed = (frame) => frame.error && frame.error.status;

// ---------------------------------------------------------------------------------------------
// Requests

async function call(target) {
  target = target.trim();
  if (!target) return;
  const response = await send(TYPE.request, { targetUser: target });
  if (failed(response)) return refused(`Call to ${nameOf(target)}`, response);
  const requestId = response.data.videochatRequestId;
  // Glare: the answer names the ring already coming the other way, which this call accepts;
  // directVideochatRequestAccepted follows.
  if (state.incoming.has(requestId)) {
    state.answeredHere.add(requestId);
  } else {
    state.outgoing.set(requestId, { kind: 'direct', target, since: Date.now() });
    renderOutgoing();
  }
}

async function invite(target, videochatId) {
  target = target.trim();
  if (!target || !videochatId) return;
  const response = await send(TYPE.invite, { targetUser: target, videochatId });
  if (failed(response)) return refused(`Invitation of ${nameOf(target)}`, response);
  const requestId = response.data.videochatRequestId;
  state.outgoing.set(requestId, { kind: 'invite', target, videochatId, since: Date.now() });
  renderOutgoing();
}

async function accept(requestId) {
  const ring = state.incoming.get(requestId);
  state.answeredHere.add(requestId);
  const response = await send(TYPE.accept, { videochatRequestId: requestId });
  if (failed(response)) {
    state.answeredHere.delete(requestId);
    dropStale(requestId, response);
    return refused(`Accepting ${describeRing(requestId, ring)}`, response);
  }
  state.incoming.delete(requestId);
  renderIncoming();
  ending(requestId, 'accepted', `You accepted ${describeRing(requestId, ring)}.`);
  join(response.data);
}

async function decline(requestId) {
  const response = await send(TYPE.decline, { videochatRequestId: requestId });
  if (failed(response)) {
    dropStale(requestId, response);
    return refused(`Declining ${requestId}`, response);
  }
  // videochatDeclined follows, with the reason, on every socket of both users.
}

async function merge(requestId) {
  const ring = state.incoming.get(requestId);
  const videochatId = state.current;
  if (!videochatId) return;
  state.answeredHere.add(requestId);
  const response = await send(TYPE.merge, { videochatId, videochatRequestId: requestId });
  if (failed(response)) {
    state.answeredHere.delete(requestId);
    dropStale(requestId, response);
    return refused(`Merging ${describeRing(requestId, ring)}`, response);
  }
  state.incoming.delete(requestId);
  renderIncoming();
  ending(requestId, 'merged', `You merged ${describeRing(requestId, ring)} into ${videochatId}.`);
}

/** A ring the server says is gone or never was: stop showing it. */
function dropStale(requestId, response) {
  if ([10012, 10014].includes(response.error.code)) {
    state.incoming.delete(requestId);
    state.outgoing.delete(requestId);
    renderIncoming();
    renderOutgoing();
  }
}

// ---------------------------------------------------------------------------------------------
// Events

function onRequested(ring) {
  remember(ring.user);
  (ring.participants || []).forEach(remember);
  state.incoming.set(ring.videochatRequestId, { ...ring, receivedAt: Date.now() });
  renderIncoming();
  renderOnline(); // names and avatars just learnt
}

function onDirectAccepted(credentials) {
  const requestId = credentials.videochatRequestId;
  const outgoing = requestId && state.outgoing.get(requestId);
  const incoming = requestId && state.incoming.get(requestId);
  if (requestId) {
    state.outgoing.delete(requestId);
    state.incoming.delete(requestId);
    renderOutgoing();
    renderIncoming();
  }
  const who = outgoing ? nameOf(outgoing.target) : incoming ? nameOf(incoming.user.id) : 'they';
  ending(requestId, 'accepted', `${who} answered: you are in videochat ${credentials.videochatId}.`);
  join(credentials);
}

function onAccepted({ videochatRequestId: requestId }) {
  const ring = state.incoming.get(requestId);
  if (state.answeredHere.has(requestId)) return;
  state.incoming.delete(requestId);
  renderIncoming();
  if (ring) ending(requestId, 'answered-elsewhere', `${describeRing(requestId, ring)} was answered on another device of yours.`);
}

function onDeclined({ videochatRequestId: requestId, reason }) {
  const incoming = state.incoming.get(requestId);
  const outgoing = state.outgoing.get(requestId);
  state.incoming.delete(requestId);
  state.outgoing.delete(requestId);
  renderIncoming();
  renderOutgoing();
  const what = incoming
    ? describeRing(requestId, incoming)
    : outgoing
      ? `your ${outgoing.kind === 'invite' ? 'invitation of' : 'call to'} ${nameOf(outgoing.target)} (${requestId})`
      : `ring ${requestId}`;
  ending(requestId, reason, `Ended ${what}: ${reason} — ${REASONS[reason] || 'no reason given'}.`);
}

function describeRing(requestId, ring) {
  if (!ring) return `ring ${requestId}`;
  const from = nameOf(ring.user.id);
  return ring.videochatId
    ? `the invitation from ${from} into ${ring.videochatId} (${requestId})`
    : `the call from ${from} (${requestId})`;
}

function join(credentials) {
  remember(credentials.user);
  state.videochats.delete(credentials.videochatId);
  state.videochats.set(credentials.videochatId, credentials);
  state.current = credentials.videochatId;
  renderVideochat();
  renderIncoming(); // "merge" becomes possible
  renderOnline();
}

// ---------------------------------------------------------------------------------------------
// Rendering

function renderIncoming() {
  const list = $('#incoming');
  const items = [...state.incoming.values()].map((ring) => {
    const id = ring.videochatRequestId;
    const participants = ring.participants || [];
    const mergeable = !ring.videochatId && state.current;
    return h('li', { class: 'ring incoming', dataset: { requestId: id, caller: ring.user.id } },
      h('div', { class: 'ring-head' },
        avatar(ring.user, 'large'),
        h('div', { class: 'ring-who' },
          h('div', { class: 'caller-name' }, displayName(ring.user)),
          h('div', { class: 'caller-id' }, ring.user.id),
          h('div', { class: 'ring-kind' }, ring.videochatId
            ? ['invites you into videochat ', h('code', { class: 'ring-videochat' }, ring.videochatId)]
            : 'is calling you (direct call)')),
        h('div', { class: 'countdown', dataset: { expiresAt: ring.expiresAt }, title: `expiresAt ${ring.expiresAt}` },
          countdownText(ring.expiresAt))),
      h('div', { class: 'ring-participants' },
        h('span', { class: 'counter' }, `${ring.counter} in the videochat`),
        participants.length
          ? h('span', { class: 'participants' }, ': ',
            participants.map((p) => h('span', { class: 'participant', dataset: { userId: p.id } }, avatar(p, 'small'), displayName(p))))
          : ' (participants: none yet)'),
      h('div', { class: 'ring-id' }, 'request ', h('code', {}, id)),
      h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'accept primary', onclick: () => accept(id) }, 'Accept'),
        h('button', { type: 'button', class: 'decline danger', onclick: () => decline(id) }, 'Decline'),
        ring.videochatId ? null : h('button', {
          type: 'button',
          class: 'merge',
          disabled: !mergeable,
          title: mergeable ? `pull ${displayName(ring.user)} into ${state.current}` : 'join a videochat first',
          onclick: () => merge(id),
        }, 'Merge into current videochat')));
  });
  list.replaceChildren(...items);
  $('#incoming-card').hidden = items.length === 0;
  document.body.classList.toggle('ringing', items.length > 0);
}

function renderOutgoing() {
  const list = $('#outgoing');
  const items = [...state.outgoing.entries()].map(([id, ring]) =>
    h('li', { class: `ring outgoing ${ring.kind}`, dataset: { requestId: id, target: ring.target } },
      h('div', { class: 'ring-head' },
        avatar(state.people.get(ring.target) || { id: ring.target }),
        h('div', { class: 'ring-who' },
          h('div', {}, ring.kind === 'invite'
            ? ['Inviting ', h('strong', {}, nameOf(ring.target)), ' into ', h('code', {}, ring.videochatId)]
            : ['Calling ', h('strong', {}, nameOf(ring.target))]),
          h('div', { class: 'ring-id' }, 'request ', h('code', {}, id))),
        h('div', { class: 'elapsed', dataset: { since: ring.since } }, elapsedText(ring.since))),
      ring.kind === 'invite'
        ? h('p', { class: 'hint' }, 'The inviter hears of a decline or a timeout; an accepted invitation sends the inviter no event.')
        : null,
      h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'cancel danger', onclick: () => decline(id) }, 'Cancel'),
        ring.kind === 'invite'
          ? h('button', { type: 'button', class: 'forget', onclick: () => { state.outgoing.delete(id); renderOutgoing(); } }, 'Forget')
          : null)));
  list.replaceChildren(...items);
  $('#outgoing-card').hidden = items.length === 0;
}

function renderVideochat() {
  const box = $('#videochat');
  const c = state.videochats.get(state.current);
  $('#videochat-empty').hidden = Boolean(c);
  if (!c) return box.replaceChildren();
  const exp = tokenExpiry(c.token);
  const rows = [
    ['videochat', h('code', { class: 'videochat-id' }, c.videochatId)],
    ['mode', c.videochatMode],
    ['engine', h('span', { class: 'engine' }, c.videochatEngine)],
    ['room', h('code', { class: 'room' }, c.room)],
    ['identity', h('code', { class: 'identity' }, c.identity)],
    ['uid', h('span', { class: 'uid' }, c.uid)],
    c.videochatUrl ? ['url', h('code', {}, c.videochatUrl)] : null,
    c.videochatAppId ? ['app id', h('code', {}, c.videochatAppId)] : null,
    ['token', h('code', { class: 'token', title: c.token }, `${c.token.slice(0, 24)}…`)],
    ['token expires', h('span', { class: 'token-expiry', dataset: { exp: exp ?? '' } },
      exp ? `${new Date(exp * 1000).toLocaleString()} (${untilText(exp * 1000)})` : 'no exp claim')],
    c.sharedSecret ? ['shared secret', h('code', { class: 'shared-secret' }, c.sharedSecret)] : null,
    ['permissions', h('span', { class: 'permissions' },
      PERMISSIONS.map((p) => h('span', { class: `perm ${c.permissions[p] ? 'on' : 'off'}`, dataset: { perm: p } }, p)))],
  ].filter(Boolean);
  const livekit = c.videochatEngine === 'livekit' && c.videochatUrl
    ? h('p', { class: 'livekit' },
      h('a', {
        id: 'livekit-link',
        href: `https://meet.livekit.io/custom?liveKitUrl=${encodeURIComponent(c.videochatUrl)}&token=${encodeURIComponent(c.token)}`,
        target: '_blank',
        rel: 'noopener noreferrer',
      }, 'Join in LiveKit Meet'),
      ' — works when the LiveKit server (', h('code', {}, c.videochatUrl),
      ') is reachable from this browser, e.g. a local ', h('code', {}, 'livekit-server --dev'), '.')
    : null;
  const others = [...state.videochats.keys()].filter((id) => id !== state.current);
  box.replaceChildren(...[
    h('table', { class: 'credentials' },
      rows.map(([key, value]) => h('tr', { dataset: { field: key } }, h('th', {}, key), h('td', {}, value)))),
    livekit,
    h('form', {
      class: 'inline',
      id: 'invite-form',
      autocomplete: 'off',
      onsubmit: (event) => {
        event.preventDefault();
        const input = $('#invite-target');
        invite(input.value, state.current);
        input.value = '';
      },
    },
    h('input', { id: 'invite-target', placeholder: 'user id to invite', maxlength: 128, required: true }),
    h('button', { type: 'submit' }, 'Invite')),
    others.length
      ? h('p', { class: 'others' }, 'Earlier videochats: ',
        others.map((id) => h('button', {
          type: 'button',
          class: 'small',
          onclick: () => { state.current = id; renderVideochat(); renderIncoming(); },
        }, id)))
      : null,
  ].filter(Boolean));
}

function renderOnline() {
  const list = $('#online');
  const items = state.online.map(({ userId, sockets }) => {
    const me = state.me && userId === state.me.userId;
    const user = state.people.get(userId) || { id: userId };
    return h('li', { dataset: { userId } },
      avatar(user, 'small'),
      h('span', { class: 'who' }, nameOf(userId), me ? ' (you)' : ''),
      sockets > 1 ? h('span', { class: 'sockets' }, `${sockets} sockets`) : null,
      me ? null : h('button', { type: 'button', class: 'call small', onclick: () => call(userId) }, 'Call'),
      me || !state.current ? null : h('button', {
        type: 'button',
        class: 'invite small',
        onclick: () => invite(userId, state.current),
      }, 'Invite'));
  });
  list.replaceChildren(...items);
}

function ending(requestId, kind, text) {
  const list = $('#endings');
  list.prepend(h('li', { class: `ending reason-${kind}`, dataset: { requestId: requestId || '', reason: kind } },
    h('span', { class: 'badge' }, kind), ' ', text));
}

function refused(what, frame) {
  const { code, message } = frame.error;
  const name = ERROR_NAMES[code] || 'error';
  $('#endings').prepend(h('li', { class: 'ending error', dataset: { code } },
    h('span', { class: 'badge code' }, String(code)), ` ${what} refused: ${name} — ${message}`));
}

function note(text) {
  logEntry('note', h('div', { class: 'meta' }, `${clock()} · ${text}`));
}

function logFrame(direction, frame) {
  const arrow = direction === 'in' ? '← in' : '→ out';
  const code = frame.error && frame.error.status ? ` · error ${frame.error.code}` : '';
  logEntry(direction, h('div', { class: 'meta' }, `${arrow} · ${clock()} · ${frame.type ?? '(no type)'}${code}`),
    h('pre', {}, JSON.stringify(frame, null, 2)));
}

function logEntry(kind, ...children) {
  const log = $('#log');
  log.prepend(h('div', { class: `frame ${kind}` }, children));
  while (log.childElementCount > LOG_LIMIT) log.lastElementChild.remove();
}

// ---------------------------------------------------------------------------------------------
// Time

function clock() {
  const d = new Date();
  return `${d.toLocaleTimeString([], { hour12: false })}.${String(d.getMilliseconds()).padStart(3, '0')}`;
}

function countdownText(expiresAt) {
  const left = Math.ceil((Number(expiresAt) - Date.now()) / 1000);
  return left > 0 ? `${left} s left` : 'expiring…';
}

function elapsedText(since) {
  return `ringing for ${Math.floor((Date.now() - Number(since)) / 1000)} s`;
}

function untilText(ms) {
  const s = Math.round((ms - Date.now()) / 1000);
  if (s <= 0) return 'expired';
  const hours = Math.floor(s / 3600);
  const minutes = Math.floor((s % 3600) / 60);
  return hours ? `in ${hours} h ${minutes} min` : minutes ? `in ${minutes} min` : `in ${s} s`;
}

/** The `exp` claim of a JWT, in Unix seconds (read only to show it; nothing is verified here). */
function tokenExpiry(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), '=')));
    return typeof claims.exp === 'number' ? claims.exp : null;
  } catch {
    return null;
  }
}

function tick() {
  for (const el of document.querySelectorAll('.countdown[data-expires-at]')) {
    el.textContent = countdownText(el.dataset.expiresAt);
  }
  for (const el of document.querySelectorAll('.elapsed[data-since]')) {
    el.textContent = elapsedText(el.dataset.since);
  }
}

// ---------------------------------------------------------------------------------------------
// Who is online

async function refreshOnline() {
  try {
    const response = await fetch('/demo/online', { cache: 'no-store' });
    if (!response.ok) return;
    const { users } = await response.json();
    const key = JSON.stringify(users);
    if (key === state.onlineKey) return; // re-render only on change: buttons stay put
    state.onlineKey = key;
    state.online = users;
    renderOnline();
  } catch {
    // The gateway is down; the socket's close says so.
  }
}

function pollOnline() {
  clearInterval(state.pollTimer);
  state.pollTimer = setInterval(refreshOnline, POLL_MS);
  refreshOnline();
}

// ---------------------------------------------------------------------------------------------
// Start

function start() {
  const form = $('#signin-form');
  const saved = JSON.parse(sessionStorage.getItem('videochat-demo-profile') || 'null');
  const as = new URLSearchParams(location.search).get('as');
  if (saved && !as) {
    for (const key of ['userId', 'firstName', 'lastName', 'avatar']) form.elements[key].value = saved[key] || '';
  }
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    // An empty field is left out of the token, so the stored value stays.
    const profile = { userId: form.elements.userId.value.trim() };
    for (const key of ['firstName', 'lastName', 'avatar']) {
      const value = form.elements[key].value.trim();
      if (value) profile[key] = value;
    }
    signIn(profile);
  });
  $('#call-form').addEventListener('submit', (event) => {
    event.preventDefault();
    call($('#call-target').value);
    $('#call-target').value = '';
  });
  $('#signout').addEventListener('click', signOut);
  $('#reconnect').addEventListener('click', connect);
  $('#clear-log').addEventListener('click', () => $('#log').replaceChildren());
  setInterval(tick, 250);
  if (as) {
    signIn({ userId: as }); // the stored profile (or none) stays as it is
  } else if (saved && saved.userId) {
    signIn(saved); // a reload keeps this tab signed in
  }
}

start();
