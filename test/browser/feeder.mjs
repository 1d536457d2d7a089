// Log feeder for the viewer browser test: connects to a hub as a service
// over the JSON subprotocol and sends LOG messages when told to.
import WebSocket from 'ws';

const HELLO = 1, WELCOME = 2, LOG = 7;

export class Feeder {
  constructor(name) {
    this.name = name;
    this.ws = null;
  }

  // Resolves once the hub has answered HELLO with WELCOME.
  connect(url, timeoutMs = 5000) {
    this.close();
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, 'microstream.json.v1');
      const timer = setTimeout(() => { ws.terminate(); reject(new Error(`${this.name}: no WELCOME`)); },
                               timeoutMs);
      ws.on('open', () => {
        ws.send(JSON.stringify([HELLO, 1, this.name, null,
                                { heartbeat_ms: 1000, instance: 'feeder' }]));
      });
      ws.once('message', (data) => {
        clearTimeout(timer);
        let m;
        try { m = JSON.parse(String(data)); } catch { m = null; }
        if (!Array.isArray(m) || m[0] !== WELCOME) {
          ws.terminate();
          reject(new Error(`${this.name}: expected WELCOME, got ${data}`));
          return;
        }
        this.ws = ws;
        resolve(m);
      });
      ws.on('error', (err) => { clearTimeout(timer); reject(err); });
    });
  }

  log(level, message, fields = {}) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN)
      throw new Error(`${this.name}: not connected`);
    this.ws.send(JSON.stringify([LOG, 0, level, message, fields]));
  }

  // Waits until the socket has handed everything to the kernel.
  async drain(timeoutMs = 10000) {
    const end = Date.now() + timeoutMs;
    while (this.ws && this.ws.bufferedAmount > 0) {
      if (Date.now() > end) throw new Error(`${this.name}: send buffer not drained`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  close() {
    if (this.ws) {
      this.ws.removeAllListeners();
      this.ws.on('error', () => {});
      this.ws.terminate();
      this.ws = null;
    }
  }
}
