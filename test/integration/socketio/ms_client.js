// The MicroStream Node client's behaviour on the wire, as a small module
// for the tests: socket.io-client with its stock options and
// { query: { serviceName } }; `request` {targetService, payload:{id, event,
// data}}; `response` {id, response}; errors inside `response`; its own
// timeout (REQUEST_TIMEOUT) and late responses; `heartbeat` every
// heartbeatInterval. It exits nothing: a refused registration is reported.
'use strict';
const { io } = require('socket.io-client');
const crypto = require('crypto');

function nanoid() {
  const abc = 'useandom-26T198340PX75pxJACKVERYMINDBUSHWOLF_GQZbfghjklqvwyzrict';
  const b = crypto.randomBytes(21);
  let s = '';
  for (let i = 0; i < 21; i++) s += abc[b[i] & 63];
  return s;
}

class MicroStreamClient {
  constructor(opts) {
    this.serviceName = opts.serviceName;
    this.timeout = opts.timeout || 5000;
    this.heartbeatInterval = opts.heartbeatInterval || 5000;
    this.handlers = new Map();
    this.pending = new Map();
    this.lateLog = [];
    const ioOpts = Object.assign({}, opts.ioOptions || {});
    ioOpts.query = Object.assign({}, ioOpts.query || {});
    if (this.serviceName !== undefined) ioOpts.query.serviceName = this.serviceName;
    this.socket = io(opts.hubUrl, ioOpts);
    this.connectError = null;
    this.socket.on('connect_error', (err) => {
      this.connectError = err;
      if (opts.onConnectError) opts.onConnectError(err);
    });
    this.socket.on('connect', () => {
      this.hbTimer = this.hbTimer || setInterval(() => {
        if (this.socket.connected)
          this.socket.emit('heartbeat', { serviceName: this.serviceName });
      }, this.heartbeatInterval);
    });
    this.socket.on('request', (payload) => this._onRequest(payload));
    this.socket.on('response', (msg) => this._onResponse(msg));
  }
  on(event, fn) { this.handlers.set(event, fn); }
  _onRequest({ id, event, data }) {
    const h = this.handlers.get(event);
    let response;
    if (!h) {
      response = { error: { code: 'EVENT_NOT_FOUND', message: `Event "${event}" not found`,
        errorData: { event, requestID: id, serviceName: this.serviceName } } };
    } else {
      try { response = h(data); } catch (e) {
        response = { error: { code: 'INTERNAL_SERVER_ERROR', message: 'Internal server error',
          errorData: { event, requestID: id, error: String(e && e.message || e) } } };
      }
    }
    this.socket.emit('response', { id, response });
  }
  _onResponse({ id, response }) {
    const p = this.pending.get(id);
    if (!p) { this.lateLog.push({ id, response }); return; }
    if (p.timedOut) {
      this.pending.delete(id);
      const err = response && response.error ? response.error : null;
      p.onLateResponse(err, { response, originalPayload: p.payload });
      return;
    }
    clearTimeout(p.timer);
    this.pending.delete(id);
    if (response && response.error) p.reject(response.error);
    else p.resolve(response);
  }
  request(targetService, event, data, opts = {}) {
    const id = nanoid();
    const payload = { id, event, data };
    const timeout = opts.timeout || this.timeout;
    return new Promise((resolve, reject) => {
      const p = { resolve, reject, payload, timedOut: false,
        onLateResponse: opts.onLateResponse };
      p.timer = setTimeout(() => {
        if (opts.allowLateResponseAfterTimeout) p.timedOut = true;
        else this.pending.delete(id);
        reject({ code: 'REQUEST_TIMEOUT', message: 'Request timed out',
          errorData: { targetService, event, requestID: id } });
      }, timeout);
      this.pending.set(id, p);
      this.socket.emit('request', { targetService, payload });
    });
  }
  close() {
    clearInterval(this.hbTimer);
    for (const p of this.pending.values()) clearTimeout(p.timer);
    this.socket.close();
  }
}

module.exports = { MicroStreamClient };
