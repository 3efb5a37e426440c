/**
 * The view of one run's live log, shared by the sidebar and the dashboard: lines
 * are appended as they come (never redrawn), the end is followed unless the
 * reader scrolled up, and a failed run's tail up to the `!!! soopervisor:` line
 * is marked.
 */
import { IRun } from './api';
import { h } from './dom';
import { LogStream } from './logstream';

/** The failing tail: this many lines up to the `!!! soopervisor:` line. */
const TAIL_LINES = 30;
const FAIL_MARK = '!!! soopervisor:';

export class LogView {
  /** The lines: `data-lines` counts them. */
  readonly log = h('div', { class: 'sv-log', 'data-testid': 'sv-log', tabindex: '0', 'aria-live': 'off', 'aria-label': 'Log' });
  /** One line under the log: connecting, live, reconnecting, ended; `data-state` says which. */
  readonly state = h('div', { class: 'sv-log-state sv-muted', 'data-testid': 'sv-log-state', role: 'status' });

  /** `run()`: the run as last known, for the failure's highlight. */
  constructor(
    readonly stream: LogStream,
    private _run: () => IRun | null
  ) {
    this.log.addEventListener('scroll', () => {
      const el = this.log;
      // follow the end unless the user scrolled up to read
      this._follow = el.scrollTop + el.clientHeight >= el.scrollHeight - 8;
    });
    stream.linesAdded.connect((_, from) => this._appendLines(from), this);
    stream.stateChanged.connect(() => this._renderState(), this);
    this._appendLines(0);
    this._renderState();
  }

  /** The run changed (a new status): mark its failing tail when it failed. */
  runChanged(): void {
    this._highlightFailure();
  }

  private _appendLines(from: number): void {
    const log = this.stream;
    const el = this.log;
    const frag = document.createDocumentFragment();
    for (let i = from; i < log.lines.length; i++) {
      const line = log.lines[i];
      // progress bars redraw with \r: show what a terminal would, the last redraw
      const shown = line.slice(line.lastIndexOf('\r') + 1);
      const div = h('div', { class: 'sv-log-line' }, shown || '\u200b');
      if (line.startsWith('==> soopervisor:')) {
        div.classList.add('sv-log-line--stage');
      } else if (line.startsWith(FAIL_MARK)) {
        div.classList.add('sv-log-line--mark');
      }
      this._lines.push(div);
      frag.append(div);
    }
    el.append(frag);
    el.dataset.lines = String(log.lines.length);
    this._highlightFailure();
    if (this._follow) {
      el.scrollTop = el.scrollHeight;
    }
  }

  /** On failure, mark the last lines up to and including the `!!! soopervisor:` one. */
  private _highlightFailure(): void {
    const run = this._run();
    const lines = this.stream.lines;
    if (!run || run.id !== this.stream.runId || run.status !== 'failed' || !this._lines.length) {
      return;
    }
    let end = lines.length - 1;
    for (let i = lines.length - 1; i >= 0; i--) {
      if (lines[i].startsWith(FAIL_MARK)) {
        end = i;
        break;
      }
    }
    const start = Math.max(0, end - TAIL_LINES + 1);
    this._lines.forEach((div, i) => div.classList.toggle('sv-log-line--fail', i >= start && i <= end));
    const first = this._lines[start];
    if (this._follow && first) {
      // show the failing tail once (the log is the lines' offsetParent);
      // scrollIntoView would also scroll the whole page
      this.log.scrollTop = first.offsetTop;
      this._follow = false;
    }
  }

  private _renderState(): void {
    const log = this.stream;
    const n = log.lines.length;
    const text: Record<string, string> = {
      connecting: 'Connecting to the log…',
      live: `Live — ${n} line${n === 1 ? '' : 's'}`,
      reconnecting: `Connection lost; reconnecting in ${Math.ceil(log.retryInMs / 1000)} s (from line ${n})…`,
      ended: `End of log — ${n} line${n === 1 ? '' : 's'}`,
      error: 'Cannot reach the log.'
    };
    this.state.dataset.state = log.state;
    this.state.replaceChildren(
      text[log.state],
      log.state === 'error' ? h('button', { class: 'sv-link', onclick: () => log.retry() }, ' Retry') : ''
    );
  }

  private _lines: HTMLElement[] = [];
  private _follow = true;
}
