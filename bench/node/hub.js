// The Node MicroStream hub semantics, written for the benchmark: socket.io 4
// on WebSocket only. A service connects with auth {service}; a duplicate
// name is refused; `request` {id, target, event, data, timeout} is routed by
// name under a hub-assigned id with a deadline (REQUEST_TIMEOUT, then CANCEL
// to the target); `response` {id, data} from the target goes back to the
// requester under its own id; a target that leaves fails its requests with
// TARGET_DISCONNECTED. socket.io's ping/pong is the heartbeat (10 s, like
// the C client's default).
'use strict';
const http = require('http');
const { Server } = require('socket.io');

let port = 0;
for (let i = 2; i < process.argv.length; i += 2)
  if (process.argv[i] === '--port') port = Number(process.argv[i + 1]);

const hubId = 'node-' + process.pid + '-' + Date.now();
const server = http.createServer();
const io = new Server(server, {
  transports: ['websocket'],
  serveClient: false,
  pingInterval: 10000,
  pingTimeout: 20000,
  maxHttpBufferSize: 1 << 20,
});

const services = new Map(); // name -> socket
const inflight = new Map(); // hub id -> {src, id, target, timer}
let nextId = 1;

function fail(sock, id, code, message) {
  sock.emit('error_', { id, code, message });
}

// MicroStream Node hub mode, for clients that connect with
// query {serviceName}: what that hub does (registry by name; `request`
// {targetService, payload} forwarded as the payload; `response` {id,
// response} back to whoever sent that id; errors inside `response`; the
// requesters keep their own time). Its pending table is a Map here (the
// original scans every service per response), which favours this peer.
const msServices = new Map(); // name -> socket
const msPending = new Map();  // request id -> requester socket
function microstreamMode(socket, name) {
  if (msServices.has(name)) {
    socket.emit('connect_error_', { code: 'DUPLICATE_SERVICE_REGISTRATION' });
    socket.disconnect(true);
    return;
  }
  msServices.set(name, socket);
  socket.on('request', ({ targetService, payload }) => {
    const t = msServices.get(targetService);
    if (!t) {
      socket.emit('response', { id: payload.id, response: { error: {
        code: 'TARGET_SERVICE_NOT_FOUND', message: `Service "${targetService}" not found`,
        errorData: { targetService, requestID: payload.id } } } });
      return;
    }
    msPending.set(payload.id, socket);
    t.emit('request', payload);
  });
  socket.on('response', ({ id, response }) => {
    const r = msPending.get(id);
    if (!r) return;
    msPending.delete(id);
    r.emit('response', { id, response });
  });
  socket.on('heartbeat', () => {});
  socket.on('disconnect', () => {
    if (msServices.get(name) === socket) msServices.delete(name);
  });
}

io.on('connection', (socket) => {
  const q = socket.handshake.query || {};
  if (typeof q.serviceName === 'string') {
    microstreamMode(socket, q.serviceName);
    return;
  }
  const auth = socket.handshake.auth || {};
  const name = auth.service;
  if (typeof name !== 'string' || !/^[A-Za-z0-9._:-]{1,128}$/.test(name)) {
    fail(socket, 0, 'BAD_REQUEST', 'bad service name');
    socket.disconnect(true);
    return;
  }
  if (services.has(name)) {
    fail(socket, 0, 'DUPLICATE_SERVICE_REGISTRATION', name);
    socket.disconnect(true);
    return;
  }
  services.set(name, socket);
  socket.emit('welcome', { hubId, heartbeat_ms: 10000 });

  socket.on('request', (m) => {
    if (!m || typeof m.id !== 'number') return;
    const target = services.get(m.target);
    if (!target) return fail(socket, m.id, 'TARGET_SERVICE_NOT_FOUND', m.target);
    const timeout = Math.min(m.timeout > 0 ? m.timeout : 5000, 300000);
    const hid = nextId++;
    const entry = { src: socket, id: m.id, target, timer: null };
    entry.timer = setTimeout(() => {
      inflight.delete(hid);
      fail(socket, m.id, 'REQUEST_TIMEOUT', m.target);
      target.emit('cancel', { id: hid });
    }, timeout);
    inflight.set(hid, entry);
    target.emit('request', { id: hid, source: name, event: m.event, data: m.data, timeout });
  });

  const answer = (m, ok) => {
    const e = m && inflight.get(m.id);
    if (!e || e.target !== socket) return; // unknown or not ours: dropped
    inflight.delete(m.id);
    clearTimeout(e.timer);
    if (ok) e.src.emit('response', { id: e.id, data: m.data });
    else fail(e.src, e.id, m.code, m.message);
  };
  socket.on('response', (m) => answer(m, true));
  socket.on('error_', (m) => answer(m, false));

  socket.on('disconnect', () => {
    if (services.get(name) === socket) services.delete(name);
    for (const [hid, e] of inflight) {
      if (e.target === socket) {
        inflight.delete(hid);
        clearTimeout(e.timer);
        fail(e.src, e.id, 'TARGET_DISCONNECTED', name);
      } else if (e.src === socket) {
        inflight.delete(hid);
        clearTimeout(e.timer);
        e.target.emit('cancel', { id: hid });
      }
    }
  });
});

server.listen(port, '127.0.0.1', () => {
  console.log('port ' + server.address().port + ' pid ' + process.pid);
});
const stop = () => { io.close(); process.exit(0); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
