// The browser demo, end to end, in Debian's Chromium driven by playwright-core.
//
//   node demo.spec.mjs <scenario>      scenarios: call, decline, merge-invite, timeout
//
// Environment (set by services/videochat/tests/browser.rs): DEMO_URL (the gateway, started with
// the development secret), RING_TIMEOUT_S (its ring timeout), NODE_DEPS (where playwright-core
// is installed), CHROMIUM (the browser binary), SCREENSHOTS (a directory for pictures, or empty).
//
// Every wait has a deadline and waits for something to appear or change; nothing sleeps.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const require = createRequire(join(process.env.NODE_DEPS, 'package.json'));
const { chromium } = require('playwright-core');

const BASE = process.env.DEMO_URL;
const RING_S = Number(process.env.RING_TIMEOUT_S || 45);
const SHOTS = process.env.SCREENSHOTS || '';
const TIMEOUT = 20_000;
const VIEWPORT = { width: 1280, height: 860 };

/** An avatar that needs no network: a data: URL travels as the `picture` claim like any URL. */
const AVATAR = `data:image/svg+xml,${encodeURIComponent(
  '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64"><rect width="64" height="64" rx="32" fill="#d6457a"/>'
  + '<text x="32" y="41" font-family="sans-serif" font-size="24" font-weight="700" text-anchor="middle" fill="#fff">AL</text></svg>',
)}`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  // As root there is no sandbox; the rest keeps Chromium off the (closed) network.
  chromiumSandbox: false,
  args: [
    '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync',
  ],
});
const pageErrors = [];
const pages = [];

// ---------------------------------------------------------------------------------------------
// Helpers

async function newPage(context, label) {
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on('pageerror', (error) => pageErrors.push(`${label}: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') console.log(`[${label} console] ${message.text()}`);
  });
  pages.push({ label, page });
  return page;
}

/** A browser context of its own (one person), and its first tab. */
async function person(label) {
  const context = await browser.newContext({ viewport: VIEWPORT });
  return { context, page: await newPage(context, label) };
}

async function signInWithForm(page, { userId, firstName, lastName, avatar }) {
  await page.goto(`${BASE}/`);
  await page.locator('#dev-banner').filter({ hasText: 'anyone can sign in as anyone' }).waitFor();
  await page.fill('#user-id', userId);
  await page.fill('#first-name', firstName);
  await page.fill('#last-name', lastName);
  await page.fill('#avatar', avatar);
  await page.click('#signin-button');
  await connected(page);
  // The token endpoint's own warning replaces the page's.
  assert.match(await page.locator('#dev-warning').textContent(), /anyone can sign in as anyone/);
}

async function signInAs(page, userId) {
  await page.goto(`${BASE}/?as=${encodeURIComponent(userId)}`);
  await connected(page);
}

const connected = (page) => page.locator('#status[data-state="connected"]').waitFor();

const ringOf = (page, id) => page.locator(`#incoming li[data-request-id="${id}"]`);
const endingOf = (page, id, reason) =>
  page.locator(`#endings li[data-request-id="${id}"][data-reason="${reason}"]`);

/** Calls `userId` from the online list; returns the outgoing ring's request id. */
async function callFromOnlineList(page, userId) {
  await page.locator(`#online li[data-user-id="${userId}"] button.call`).click();
  const ring = page.locator(`#outgoing li.ring[data-target="${userId}"]`);
  await ring.waitFor();
  const id = await ring.getAttribute('data-request-id');
  assert.match(id, /^vcr_/);
  return id;
}

/** What the videochat card shows, once it shows one. */
async function credentials(page) {
  const box = page.locator('#videochat');
  await box.locator('.videochat-id').waitFor();
  const text = async (selector) => (await box.locator(selector).textContent()).trim();
  const on = await box.locator('.perm.on').allTextContents();
  const link = box.locator('#livekit-link');
  assert.doesNotMatch(await box.innerText(), /\b(null|undefined|NaN)\b/);
  return {
    videochat: await text('.videochat-id'),
    engine: await text('.engine'),
    room: await text('.room'),
    identity: await text('.identity'),
    uid: Number(await text('.uid')),
    exp: Number(await box.locator('.token-expiry').getAttribute('data-exp')),
    expiryText: await text('.token-expiry'),
    permissions: on.sort(),
    livekit: (await link.count()) ? await link.getAttribute('href') : null,
  };
}

/** Waits until `selector`'s text is no longer `before` (polling: background tabs get no frames). */
async function textChanges(page, selector, before) {
  await page.waitForFunction(
    ([sel, old]) => document.querySelector(sel)?.textContent !== old,
    [selector, before],
    { polling: 100, timeout: TIMEOUT },
  );
}

async function screenshot(page, name) {
  if (!SHOTS) return;
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: join(SHOTS, name) });
  console.log(`screenshot ${join(SHOTS, name)}`);
}

// ---------------------------------------------------------------------------------------------
// Scenarios

const scenarios = {
  /** alice calls bob, whose two tabs both ring; one accepts, the other stops ringing. */
  async call() {
    const { page: alice } = await person('alice');
    await signInWithForm(alice, { userId: 'alice', firstName: 'Alice', lastName: 'Liddell', avatar: AVATAR });
    assert.equal(await alice.locator('#me-name').textContent(), 'Alice Liddell');
    const bob = await person('bob tab 1');
    const bob1 = bob.page;
    const bobProfile = { userId: 'bob', firstName: 'Bob', lastName: 'Builder', avatar: '' };
    await signInWithForm(bob1, bobProfile);
    const bob2 = await newPage(bob.context, 'bob tab 2');
    await signInWithForm(bob2, bobProfile);

    // The online list shows bob with his two sockets.
    await alice.locator('#online li[data-user-id="bob"]').filter({ hasText: '2 sockets' }).waitFor();
    const id = await callFromOnlineList(alice, 'bob');

    for (const tab of [bob1, bob2]) {
      const ring = ringOf(tab, id);
      await ring.waitFor();
      assert.equal(await ring.locator('.caller-name').textContent(), 'Alice Liddell');
      assert.equal(await ring.locator('.caller-id').textContent(), 'alice');
      assert.equal(await ring.locator('img.avatar').getAttribute('src'), AVATAR);
      assert.match(await ring.locator('.ring-kind').textContent(), /direct call/);
      assert.equal(await ring.locator('.counter').textContent(), '0 in the videochat');
      // A live countdown to expiresAt.
      const countdown = `#incoming li[data-request-id="${id}"] .countdown`;
      const before = await tab.locator(countdown).textContent();
      const left = Number(before.match(/^(\d+) s left$/)?.[1]);
      assert.ok(left >= 1 && left <= RING_S, `countdown ${before} (rings for ${RING_S} s)`);
      await textChanges(tab, countdown, before);
    }
    await screenshot(bob1, 'demo-ringing.png');

    await ringOf(bob1, id).locator('button.accept').click();
    // The other tab stops ringing on videochatAccepted and says why.
    await ringOf(bob2, id).waitFor({ state: 'detached' });
    await endingOf(bob2, id, 'answered-elsewhere').waitFor();
    assert.ok(await bob2.locator('#videochat-empty').isVisible());

    const forBob = await credentials(bob1);
    const forAlice = await credentials(alice);
    assert.equal(forAlice.videochat, forBob.videochat);
    assert.match(forAlice.videochat, /^vc_/);
    assert.equal(forAlice.room, forAlice.videochat);
    assert.equal(forAlice.engine, 'livekit');
    assert.deepEqual([forAlice.identity, forAlice.uid], ['alice', 1]);
    assert.deepEqual([forBob.identity, forBob.uid], ['bob', 2]);
    assert.deepEqual(forAlice.permissions, ['isModerator', 'isOwner', 'isParticipant', 'isPromoted']);
    assert.deepEqual(forBob.permissions, ['isParticipant', 'isPromoted']);
    // The token's exp, decoded: in the future, and shown.
    assert.ok(forAlice.exp * 1000 > Date.now(), `exp ${forAlice.exp}`);
    assert.match(forAlice.expiryText, /\(in \d+ (h|min)/);
    // The LiveKit Meet link carries the URL and the token, URL-encoded.
    const link = new URL(forAlice.livekit);
    assert.equal(link.origin + link.pathname, 'https://meet.livekit.io/custom');
    assert.equal(link.searchParams.get('liveKitUrl'), 'ws://localhost:7880');
    assert.equal(link.searchParams.get('token').split('.').length, 3);
    assert.ok(forAlice.livekit.includes('liveKitUrl=ws%3A%2F%2Flocalhost%3A7880&token='));

    await alice.locator('#outgoing li.ring').waitFor({ state: 'detached' });
    await endingOf(alice, id, 'accepted').waitFor();
    await endingOf(bob1, id, 'accepted').waitFor();
    // The frame log shows what went by, pretty-printed.
    await alice.locator('#log .frame.in .meta').filter({ hasText: 'videochat:directVideochatRequestAccepted' }).waitFor();
    await alice.locator('#log .frame.out .meta').filter({ hasText: 'videochat:requestDirectVideochat' }).waitFor();
    const pretty = await alice.locator('#log .frame.in pre').first().textContent();
    assert.ok(pretty.includes('\n  "type": '), pretty);
    await screenshot(alice, 'demo-connected.png');
  },

  /** A decline and a cancel, each shown with its reason on both sides; refusals with their codes. */
  async decline() {
    const { page: alice } = await person('alice');
    const { page: bob } = await person('bob');
    await signInAs(alice, 'alice');
    await signInAs(bob, 'bob');

    // Called by typing the id; bob declines.
    await alice.fill('#call-target', 'bob');
    await alice.click('#call-form button[type=submit]');
    const first = await alice.locator('#outgoing li.ring[data-target="bob"]').getAttribute('data-request-id');
    await ringOf(bob, first).locator('button.decline').click();
    for (const page of [alice, bob]) {
      const ending = endingOf(page, first, 'declined');
      await ending.waitFor();
      assert.match(await ending.textContent(), /declined — the person called said no/);
    }
    await ringOf(bob, first).waitFor({ state: 'detached' });
    await alice.locator(`#outgoing li[data-request-id="${first}"]`).waitFor({ state: 'detached' });

    // alice calls again and hangs up before bob answers.
    const second = await callFromOnlineList(alice, 'bob');
    await ringOf(bob, second).waitFor();
    await alice.locator(`#outgoing li[data-request-id="${second}"] button.cancel`).click();
    for (const page of [alice, bob]) {
      const ending = endingOf(page, second, 'cancelled');
      await ending.waitFor();
      assert.match(await ending.textContent(), /cancelled — the caller hung up/);
    }
    await ringOf(bob, second).waitFor({ state: 'detached' });

    // Refusals show their code and message.
    const refusal = async (target, code, words) => {
      await alice.fill('#call-target', target);
      await alice.click('#call-form button[type=submit]');
      const shown = alice.locator(`#endings li.error[data-code="${code}"]`);
      await shown.waitFor();
      assert.match(await shown.textContent(), words);
    };
    await refusal('nobody', 1021, /user not found/);
    await refusal('alice', 10016, /cannot call or invite that user/);
    const { page: carol } = await person('carol');
    await signInAs(carol, 'carol');
    await carol.click('#signout'); // returns to the sign-in form once the server closed the socket
    await carol.locator('#signin-card').waitFor();
    await refusal('carol', 10011, /user not available/);
  },

  /** bob merges carol's call into his videochat with alice; alice invites dave, who accepts. */
  async 'merge-invite'() {
    const users = {};
    const names = { alice: 'Alice Liddell', bob: 'Bob Builder', carol: 'Carol Danvers', dave: 'Dave Bowman' };
    for (const [userId, name] of Object.entries(names)) {
      users[userId] = (await person(userId)).page;
      const [firstName, lastName] = name.split(' ');
      await signInWithForm(users[userId], { userId, firstName, lastName, avatar: userId === 'alice' ? AVATAR : '' });
    }
    const { alice, bob, carol, dave } = users;

    const first = await callFromOnlineList(alice, 'bob');
    await ringOf(bob, first).locator('button.accept').click();
    const videochat = (await credentials(alice)).videochat;
    assert.equal((await credentials(bob)).videochat, videochat);

    // carol calls bob, who is in a videochat: he merges her into it.
    const second = await callFromOnlineList(carol, 'bob');
    const merge = ringOf(bob, second).locator('button.merge');
    await merge.waitFor();
    assert.ok(await merge.isEnabled());
    await merge.click();
    const forCarol = await credentials(carol);
    assert.equal(forCarol.videochat, videochat);
    assert.deepEqual([forCarol.identity, forCarol.uid], ['carol', 3]);
    assert.deepEqual(forCarol.permissions, ['isParticipant', 'isPromoted']);
    await endingOf(bob, second, 'merged').waitFor();
    await ringOf(bob, second).waitFor({ state: 'detached' });
    await carol.locator(`#outgoing li[data-request-id="${second}"]`).waitFor({ state: 'detached' });

    // alice invites dave from the online list; his ring shows the videochat, its participants
    // and their number.
    await alice.locator('#online li[data-user-id="dave"] button.invite').click();
    const invitation = alice.locator('#outgoing li.ring.invite[data-target="dave"]');
    await invitation.waitFor();
    const third = await invitation.getAttribute('data-request-id');
    const ring = ringOf(dave, third);
    await ring.waitFor();
    assert.equal(await ring.locator('.ring-videochat').textContent(), videochat);
    assert.equal(await ring.locator('.caller-name').textContent(), 'Alice Liddell');
    assert.equal(await ring.locator('.counter').textContent(), '3 in the videochat');
    const participants = await ring.locator('.participant').evaluateAll((els) => els.map((e) => e.dataset.userId));
    assert.deepEqual(participants.sort(), ['alice', 'bob', 'carol']);
    assert.equal(await ring.locator('button.merge').count(), 0, 'an invitation cannot be merged');
    await screenshot(dave, 'demo-invited.png');

    await ring.locator('button.accept').click();
    const forDave = await credentials(dave);
    assert.equal(forDave.videochat, videochat);
    assert.deepEqual([forDave.identity, forDave.uid], ['dave', 4]);
    assert.deepEqual(forDave.permissions, ['isParticipant', 'isPromoted']);
    await endingOf(dave, third, 'accepted').waitFor();
  },

  /** Nobody answers: both sides see the timeout (run it on a stack whose rings are short). */
  async timeout() {
    const { page: alice } = await person('alice');
    const { page: bob } = await person('bob');
    await signInAs(alice, 'alice');
    await signInAs(bob, 'bob');
    const id = await callFromOnlineList(alice, 'bob');
    const before = await ringOf(bob, id).locator('.countdown').textContent();
    const left = before.match(/^(\d+) s left$/);
    assert.ok(before === 'expiring…' || Number(left?.[1]) <= RING_S, before);
    for (const page of [alice, bob]) {
      const ending = endingOf(page, id, 'timeout');
      await ending.waitFor();
      assert.match(await ending.textContent(), /timeout — nobody answered in time/);
    }
    await ringOf(bob, id).waitFor({ state: 'detached' });
  },
};

// ---------------------------------------------------------------------------------------------

const name = process.argv[2];
try {
  if (!scenarios[name]) throw new Error(`no scenario ${name}; have: ${Object.keys(scenarios).join(', ')}`);
  await scenarios[name]();
  if (pageErrors.length) throw new Error(`errors in the pages: ${pageErrors.join('; ')}`);
  console.log(`scenario ${name}: passed`);
} catch (error) {
  process.exitCode = 1;
  console.log(`scenario ${name} FAILED: ${error.stack ?? error}`);
  for (const { label, page } of pages) {
    if (page.isClosed()) continue;
    const endings = await page.locator('#endings').innerText().catch(() => '');
    const status = await page.locator('#status').innerText().catch(() => '');
    console.log(`--- ${label}: status ${status}\n${endings}`);
    if (SHOTS) await page.screenshot({ path: join(SHOTS, `failed-${name}-${label.replace(/\W+/g, '-')}.png`) }).catch(() => {});
  }
} finally {
  await browser.close();
}
