// Checks frames captured from the real stack against docs/asyncapi.yaml.
//
//   node docs/asyncapi/check-frames.mjs frames.json
//
// frames.json: {"frames": [{"message": "<message id in the document>", "frame": {...}}, ...]},
// written by services/videochat/tests/asyncapi_frames.rs. For each frame: the message exists in
// an operation (requests in a `send` operation, responses in its `reply`, events in a `receive`
// operation), the frame's `type` is the message's name, and the frame validates against the
// message's payload schema — strictly: an object schema that lists `properties` accepts no other
// key, so a field the server sends but the document does not describe fails. Every message of the
// document must be seen at least once. Exits 1 on any failure.
//
// Dependencies come from docs/asyncapi/node_modules, or from the directory NODE_DEPS names (the
// Rust test installs them under target/).

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(
  process.env.NODE_DEPS ? join(process.env.NODE_DEPS, 'package.json') : import.meta.url,
);
const { Parser } = require('@asyncapi/parser');
const Ajv = require('ajv');

const framesPath = process.argv[2];
if (!framesPath) {
  console.error('usage: node check-frames.mjs frames.json [asyncapi.yaml]');
  process.exit(2);
}
const docPath = process.argv[3] ?? fileURLToPath(new URL('../asyncapi.yaml', import.meta.url));

const { document, diagnostics } = await new Parser().parse(readFileSync(docPath, 'utf8'));
const parseErrors = diagnostics.filter((d) => d.severity === 0);
if (!document || parseErrors.length > 0) {
  for (const d of parseErrors) console.log(`error ${d.code} ${d.path.join('.')}: ${d.message}`);
  console.log(`${docPath}: not a valid AsyncAPI document`);
  process.exit(1);
}

// Which messages are requests, responses and events, from the operations.
const role = new Map(); // message id → 'request' | 'response' | 'event'
for (const op of document.operations()) {
  for (const m of op.messages()) {
    role.set(m.id(), op.action() === 'send' ? 'request' : 'event');
  }
  const reply = op.reply();
  if (reply) for (const m of reply.messages()) role.set(m.id(), 'response');
}
const messages = new Map(document.components().messages().all().map((m) => [m.id(), m]));

/** additionalProperties: false wherever an object schema lists its properties and says nothing. */
function closed(schema) {
  if (Array.isArray(schema)) return schema.map(closed);
  if (schema === null || typeof schema !== 'object') return schema;
  const out = Object.fromEntries(Object.entries(schema).map(([k, v]) => [k, closed(v)]));
  if (out.properties && !('additionalProperties' in out) && !('patternProperties' in out)) {
    out.additionalProperties = false;
  }
  return out;
}

const ajv = new Ajv({ strict: false, allErrors: true });
const validators = new Map();
function validatorFor(id) {
  if (!validators.has(id)) {
    const schema = closed(JSON.parse(JSON.stringify(messages.get(id).payload().json())));
    validators.set(id, ajv.compile(schema));
  }
  return validators.get(id);
}

const { frames } = JSON.parse(readFileSync(framesPath, 'utf8'));
const seen = new Map();
const codes = new Set();
const reasons = new Set();
let failures = 0;
const fail = (entry, why) => {
  failures += 1;
  console.log(`FAIL ${entry.message}: ${why}\n  frame: ${JSON.stringify(entry.frame)}`);
};

for (const entry of frames) {
  const { message: id, frame } = entry;
  if (!messages.has(id) || !role.has(id)) {
    fail(entry, 'no such message in any operation of the document');
    continue;
  }
  seen.set(id, (seen.get(id) ?? 0) + 1);
  const message = messages.get(id);
  if (id === 'errorResponse') {
    // Its type is whatever the refused frame carried (an unknown type is echoed too).
    codes.add(frame.error?.code);
  } else if (frame.type !== message.name()) {
    fail(entry, `type is ${JSON.stringify(frame.type)}, the message's name is ${message.name()}`);
  }
  if (frame.data?.reason) reasons.add(frame.data.reason);
  const validate = validatorFor(id);
  if (!validate(frame)) {
    const errors = validate.errors
      .map((e) => `${e.instancePath || '/'} ${e.message}${e.params?.additionalProperty ? ` (${e.params.additionalProperty})` : ''}`)
      .join('; ');
    fail(entry, `does not match its schema: ${errors}`);
  }
}

for (const id of role.keys()) {
  if (!seen.has(id)) {
    failures += 1;
    console.log(`FAIL ${id}: the document describes it but no real frame exercised it`);
  }
}

for (const [id, count] of [...seen.entries()].sort()) console.log(`ok ${id} (${role.get(id)}): ${count} frames`);
console.log(`error codes seen: ${[...codes].sort((a, b) => a - b).join(', ')}`);
console.log(`decline reasons seen: ${[...reasons].sort().join(', ')}`);
if (failures > 0) {
  console.log(`${failures} failures`);
  process.exit(1);
}
console.log(`${frames.length} frames match ${docPath}`);
