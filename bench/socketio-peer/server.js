// The benchmark's side-by-side peer: the handshake as a team would write it themselves with
// Socket.IO and Postgres. Per-user rooms for fan-out (every socket of a user joins `user:<sub>`),
// presence is "the room is not empty" in this process's memory, and each step of a handshake is
// one durable Postgres transaction: the request inserts the ring, the accept moves it to
// `accepted` and inserts the videochat. Clients authenticate at connect with the same HS256 JWT
// as the Rust gateway (`sub` = user id) and get LiveKit-style access tokens on accept.
//
// Deliberately plain: no ring expiry, no idempotency, no multi-replica delivery, no user table.
// It is the baseline `bench/bench.sh` measures us against, not a second implementation.

'use strict';

const crypto = require('node:crypto');
const http = require('node:http');
const jwt = require('jsonwebtoken');
const pg = require('pg');
const { Server } = require('socket.io');

const env = process.env;
const PORT = Number(env.PORT || 3000);
const HOST = env.HOST || '127.0.0.1';
const SECRET = env.VIDEOCHAT_JWT_SECRET || 'videochat-dev-secret-do-not-use-in-production';
const LIVEKIT = {
  url: env.LIVEKIT_URL || 'ws://localhost:7880',
  key: env.LIVEKIT_API_KEY || 'devkey',
  secret: env.LIVEKIT_API_SECRET || 'secret',
};
// Key objects made once: given a string, jsonwebtoken makes one per call, and that OpenSSL
// work was a third of this server's CPU under load.
const SECRET_KEY = crypto.createSecretKey(Buffer.from(SECRET));
const LIVEKIT_KEY = crypto.createSecretKey(Buffer.from(LIVEKIT.secret));
const RING_MS = 45_000;
const TOKEN_TTL_S = 6 * 3600;

// Same pool size as the Rust service's default (VIDEOCHAT_DB_MAX_CONNECTIONS=16).
const pool = new pg.Pool({ connectionString: env.DATABASE_URL, max: Number(env.PG_POOL || 16) });

const SCHEMA = `
CREATE TABLE IF NOT EXISTS ring (
  id text PRIMARY KEY, initiator text NOT NULL, target text NOT NULL, status text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(), expires_at timestamptz NOT NULL);
CREATE TABLE IF NOT EXISTS videochat (
  id text PRIMARY KEY, request_id text NOT NULL REFERENCES ring (id), initiator text NOT NULL,
  target text NOT NULL, room text NOT NULL, shared_secret text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now());`;

const OK = { status: false, code: 0, message: '' };
const fail = (code, message) => ({ error: { status: true, code, message } });

/** BEGIN; fn(client); COMMIT — or ROLLBACK when fn throws or returns undefined. */
async function transaction(fn) {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const result = await fn(client);
    await client.query(result === undefined ? 'ROLLBACK' : 'COMMIT');
    return result;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {});
    throw error;
  } finally {
    client.release();
  }
}

/** A LiveKit access token: HS256 JWT with a video grant for the room. */
function livekitToken(user, room) {
  const now = Math.floor(Date.now() / 1000);
  const video = { roomJoin: true, room, canPublish: true, canSubscribe: true, canPublishData: true };
  const claims = { iss: LIVEKIT.key, sub: user.id, nbf: now, exp: now + TOKEN_TTL_S, name: user.firstName, video };
  return jwt.sign(claims, LIVEKIT_KEY, { algorithm: 'HS256' });
}

function credentials(videochat, user, uid, owner) {
  return {
    videochatId: videochat.id, videochatMode: 'videochat', videochatEngine: 'livekit',
    videochatAppId: '', videochatUrl: LIVEKIT.url, room: videochat.room, identity: user.id, uid,
    token: livekitToken(user, videochat.room), sharedSecret: videochat.sharedSecret, user,
    permissions: {
      isModerator: owner, isOwner: owner, isPanelist: false, isPresenter: false,
      isCoPresenter: false, isPromoted: true, isParticipant: true, isListener: false,
    },
    videochatRequestId: videochat.requestId,
  };
}

const httpServer = http.createServer((req, res) => {
  res.writeHead(req.url === '/healthz' ? 200 : 404).end();
});
const io = new Server(httpServer);
// Profiles of connected users, for the `user` objects of events (the token is the profile).
const profiles = new Map();

io.use((socket, next) => {
  const token = socket.handshake.auth?.token ?? socket.handshake.query?.token;
  try {
    const claims = jwt.verify(String(token), SECRET_KEY, { algorithms: ['HS256'] });
    socket.data.user = {
      id: claims.sub, firstName: claims.given_name ?? '', lastName: claims.family_name ?? '',
      privacyMode: 0, avatar: '', companyName: '', companyTitle: '',
    };
    next();
  } catch {
    next(new Error('unauthorized'));
  }
});

io.on('connection', (socket) => {
  const me = socket.data.user;
  profiles.set(me.id, me);
  socket.join(`user:${me.id}`);
  socket.on('disconnect', () => {
    if (!io.sockets.adapter.rooms.get(`user:${me.id}`)?.size) profiles.delete(me.id);
  });

  socket.on('videochat:requestDirectVideochat', async (data, ack) => {
    if (typeof ack !== 'function') return;
    const target = data?.targetUser;
    if (typeof target !== 'string' || !target) return ack(fail(1002, 'targetUser: required'));
    if (!io.sockets.adapter.rooms.get(`user:${target}`)?.size) return ack(fail(10011, 'user not available'));
    try {
      const id = `vcr_${crypto.randomUUID()}`;
      const expiresAt = Date.now() + RING_MS;
      await transaction((db) => db.query(
        "INSERT INTO ring (id, initiator, target, status, expires_at) VALUES ($1, $2, $3, 'pending', to_timestamp($4 / 1000.0))",
        [id, me.id, target, expiresAt]));
      ack({ data: { videochatRequestId: id }, error: OK });
      io.to(`user:${target}`).emit('videochat:videochatRequested',
        { videochatRequestId: id, user: me, participants: [], counter: 0, expiresAt });
    } catch (error) {
      console.error(error);
      ack(fail(1004, 'internal error'));
    }
  });

  socket.on('videochat:acceptVideochatRequest', async (data, ack) => {
    if (typeof ack !== 'function') return;
    const requestId = data?.videochatRequestId;
    if (typeof requestId !== 'string' || !requestId) return ack(fail(1002, 'videochatRequestId: required'));
    try {
      const videochat = await transaction(async (db) => {
        const ring = await db.query(
          "UPDATE ring SET status = 'accepted' WHERE id = $1 AND status = 'pending' AND target = $2 RETURNING initiator",
          [requestId, me.id]);
        if (ring.rowCount !== 1) return undefined;
        const id = `vc_${crypto.randomUUID()}`;
        const row = { id, requestId, room: id, initiator: ring.rows[0].initiator, sharedSecret: crypto.randomBytes(32).toString('base64url') };
        await db.query(
          'INSERT INTO videochat (id, request_id, initiator, target, room, shared_secret) VALUES ($1, $2, $3, $4, $5, $6)',
          [id, requestId, row.initiator, me.id, row.room, row.sharedSecret]);
        return row;
      });
      if (!videochat) return ack(fail(10014, 'request not pending, or not yours'));
      const initiator = profiles.get(videochat.initiator) ?? { id: videochat.initiator };
      ack({ data: credentials(videochat, me, 2, false), error: OK });
      io.to(`user:${videochat.initiator}`).emit('videochat:directVideochatRequestAccepted', credentials(videochat, initiator, 1, true));
      io.to(`user:${me.id}`).emit('videochat:videochatAccepted', { videochatRequestId: requestId });
    } catch (error) {
      console.error(error);
      ack(fail(1004, 'internal error'));
    }
  });
});

async function main() {
  await pool.query(SCHEMA);
  httpServer.listen(PORT, HOST, () => console.log(`socketio-peer on http://${HOST}:${PORT} (pid ${process.pid})`));
  const stop = () => io.close(() => pool.end().finally(() => process.exit(0)));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
