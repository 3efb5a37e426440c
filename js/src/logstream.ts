/**
 * The live log of one run over the websocket of CONTRACT.md.
 *
 * Lines are numbered from 0. `next` is the index of the next line we need: a
 * reconnection asks for `?from=next`, and a message starting before `next`
 * has its already-known lines dropped, so a flaky connection neither loses nor
 * duplicates a line.
 */
import { ISignal, Signal } from '@lumino/signaling';

import { ApiClient, IRun } from './api';

export type LogState = 'connecting' | 'live' | 'reconnecting' | 'ended' | 'error';

/** Give up after this many connection attempts in a row that brought nothing. */
const MAX_FAILURES = 8;
const MAX_DELAY_MS = 10_000;

export class LogStream {
  readonly lines: string[] = [];
  state: LogState = 'connecting';
  /** When reconnecting: the delay before the next attempt, for the status line. */
  retryInMs = 0;
  /** The run as the server described it in the final 'end' message. */
  endRun: IRun | null = null;

  constructor(
    private _client: ApiClient,
    readonly runId: string
  ) {
    this._connect();
  }

  /** Emits the index of the first new line. */
  get linesAdded(): ISignal<this, number> {
    return this._linesAdded;
  }

  get stateChanged(): ISignal<this, LogState> {
    return this._stateChanged;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    window.clearTimeout(this._timer);
    this._socket?.close();
    this._socket = null;
    Signal.clearData(this);
  }

  /** Try again now (after the stream gave up). */
  retry(): void {
    if (this.state === 'error') {
      this._failures = 0;
      this._connect();
    }
  }

  private _connect(): void {
    if (this._disposed) {
      return;
    }
    this._setState('connecting');
    let socket: WebSocket;
    try {
      socket = this._client.logSocket(this.runId, this.lines.length);
    } catch {
      this._scheduleReconnect();
      return;
    }
    this._socket = socket;
    let gotMessage = false;
    socket.onopen = () => this._setState('live');
    socket.onmessage = event => {
      gotMessage = true;
      this._failures = 0;
      this._onMessage(event.data);
    };
    socket.onclose = () => {
      if (this._socket !== socket || this._disposed) {
        return;
      }
      this._socket = null;
      if (this.state === 'ended') {
        return;
      }
      if (!gotMessage) {
        this._failures++;
      }
      this._scheduleReconnect();
    };
  }

  private _onMessage(data: unknown): void {
    let msg: any;
    try {
      msg = JSON.parse(String(data));
    } catch {
      return; // not ours
    }
    if (msg.type === 'lines' && Array.isArray(msg.lines)) {
      const from = Number(msg.from) || 0;
      const next = this.lines.length;
      if (from > next) {
        // a gap would mean lost lines: reconnect at the first missing one
        console.warn(`soopervisor: log of ${this.runId} jumped from ${next} to ${from}; resyncing`);
        this._socket?.close();
        return;
      }
      const fresh: string[] = msg.lines.slice(next - from);
      if (fresh.length) {
        for (const line of fresh) {
          this.lines.push(String(line).replace(/\r?\n$/, ''));
        }
        this._linesAdded.emit(next);
      }
    } else if (msg.type === 'end') {
      this.endRun = msg.run ?? null;
      this._setState('ended');
      this._socket?.close();
    }
  }

  private _scheduleReconnect(): void {
    if (this._failures >= MAX_FAILURES) {
      this._setState('error');
      return;
    }
    // exponential backoff with jitter: a restarting server is not hammered
    const base = Math.min(MAX_DELAY_MS, 500 * 2 ** this._failures);
    this.retryInMs = Math.round(base * (0.75 + Math.random() * 0.5));
    this._setState('reconnecting');
    window.clearTimeout(this._timer);
    this._timer = window.setTimeout(() => this._connect(), this.retryInMs);
  }

  private _setState(state: LogState): void {
    if (this.state !== state || state === 'reconnecting') {
      this.state = state;
      this._stateChanged.emit(state);
    }
  }

  private _socket: WebSocket | null = null;
  private _failures = 0;
  private _timer = 0;
  private _disposed = false;
  private _linesAdded = new Signal<this, number>(this);
  private _stateChanged = new Signal<this, LogState>(this);
}
