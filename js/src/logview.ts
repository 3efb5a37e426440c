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

/**
 * How the run's log stream writes a task event (soopervisor/progress.py). Only the
 * log stream writes lines starting so: a pipeline line imitating one is written
 * with a `\` in front, so a line starting with this prefix can be trusted.
 */
export const TASK_LINE = '--> soopervisor: task ';

/** One task event: started, finished, failed (with its exception line), skipped; done/total. */
export interface ITaskEvent {
  event: 'plan' | 'started' | 'finished' | 'failed' | 'skipped';
  done: number;
  total: number;
  task?: string;
  error?: string;
  /** when the runner reported it (Unix seconds) */
  at?: number;
}

/** The event of a log line, or null for any other line. */
export function parseTaskLine(line: string): ITaskEvent | null {
  if (!line.startsWith(TASK_LINE)) {
    return null;
  }
  try {
    const ev = JSON.parse(line.slice(TASK_LINE.length));
    if (ev && typeof ev.event === 'string' && Number.isInteger(ev.done) && Number.isInteger(ev.total)) {
      return ev as ITaskEvent;
    }
  } catch {
    // not an event after all: shown as it is
  }
  return null;
}

/** `task 3/7 clean_data`: the progress after `ev`, as the CLI and the widget say it. */
export function progressText(ev: ITaskEvent): string {
  switch (ev.event) {
    case 'plan':
      return `${ev.total} task${ev.total === 1 ? '' : 's'} to build`;
    case 'started':
      return `task ${Math.min(ev.done + 1, ev.total)}/${ev.total} ${ev.task ?? ''}`;
    case 'failed':
      return `task ${ev.task ?? ''} failed (${ev.done}/${ev.total}): ${ev.error || 'no message'}`;
    case 'skipped':
      return `task ${ev.task ?? ''} skipped: an upstream task failed`;
    default:
      return ev.done >= ev.total ? `${ev.done}/${ev.total} tasks done` : `task ${ev.task ?? ''} done (${ev.done}/${ev.total})`;
  }
}

/** The progress a run record holds (`task`, `tasks_done`, `tasks_total`), as an event; null when it has none. */
export function recordProgress(run: IRun | null): ITaskEvent | null {
  if (!run || !run.tasks_total) {
    return null;
  }
  const done = run.tasks_done ?? 0;
  const event = run.status === 'failed' && run.task_error ? 'failed' : run.status === 'running' ? 'started' : 'finished';
  return { event, done, total: run.tasks_total, task: run.task ?? undefined, error: run.task_error ?? undefined };
}

/** A line as a terminal shows it: the last carriage-return redraw that is not blank (progress bars). */
export function collapseRedraws(line: string): string {
  if (!line.includes('\r')) {
    return line;
  }
  const parts = line.split('\r');
  for (let i = parts.length - 1; i >= 0; i--) {
    if (parts[i].trim()) {
      return parts[i];
    }
  }
  return '';
}

/**
 * The failure banner's line, as the CLI and the widget say it: the failed task and its
 * exception line, then the run's error (which names the exit code once). The panel's banner
 * should show this instead of `error` plus a separate "exit code N".
 */
export function failureSummary(run: IRun): string {
  const failedTask = run.failed_task;
  let error = run.error || `the run ${run.status}`;
  let task = '';
  if (failedTask && !failedTask.startsWith('the pipeline failed to load')) {
    task = ` at task '${failedTask}'`;
    if (run.task_error && !error.includes(run.task_error)) {
      error = `${run.task_error} (${error})`;
    }
  }
  return `run ${run.id} ${run.status}${task}: ${error}`;
}

export class LogView {
  /** The lines: `data-lines` counts them. */
  readonly log = h('div', { class: 'sv-log', 'data-testid': 'sv-log', tabindex: '0', 'aria-live': 'off', 'aria-label': 'Log' });
  /** One line under the log: connecting, live, reconnecting, ended; `data-state` says which. */
  readonly state = h('div', { class: 'sv-log-state sv-muted', 'data-testid': 'sv-log-state', role: 'status' });
  /**
   * Task progress, `task 2/3 clean` and a bar; `data-done`/`data-total`/`data-event` say it.
   * Shown inside the state line unless the panel places it elsewhere (append it anywhere).
   */
  readonly progress = h('div', { class: 'sv-log-progress', 'data-testid': 'sv-log-progress', hidden: '' });
  /** The last task event seen in the log (or the record's progress until one is). */
  task: ITaskEvent | null = null;

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
    if (!this.task) {
      this._showProgress(recordProgress(_run()));
    }
    this._renderState();
  }

  /** The run changed (a new status): mark its failing tail when it failed. */
  runChanged(): void {
    this._highlightFailure();
    if (!this.task) {
      this._showProgress(recordProgress(this._run()));
    }
  }

  private _showProgress(ev: ITaskEvent | null): void {
    const el = this.progress;
    if (!ev || ev.event === 'plan') {
      el.hidden = !ev;
      if (ev) {
        el.replaceChildren(progressText(ev));
      }
      return;
    }
    el.hidden = false;
    el.dataset.event = ev.event;
    el.dataset.done = String(ev.done);
    el.dataset.total = String(ev.total);
    const bar = h('progress', { max: String(Math.max(ev.total, 1)), value: String(ev.done), 'aria-label': 'Tasks done' });
    el.replaceChildren(bar, ' ', progressText(ev));
  }

  private _appendLines(from: number): void {
    const log = this.stream;
    const el = this.log;
    const frag = document.createDocumentFragment();
    let task: ITaskEvent | null = null;
    for (let i = from; i < log.lines.length; i++) {
      const line = log.lines[i];
      const ev = parseTaskLine(line);
      let shown: string;
      if (ev) {
        task = ev;
        // plan and each task's end only move the progress: their lines stay hidden
        const hidden = ev.event === 'plan' || (ev.event === 'finished' && ev.done < ev.total);
        shown = hidden ? '' : `--> soopervisor: ${progressText(ev)}`;
      } else {
        // progress bars redraw with \r: show what a terminal would, the last redraw
        shown = collapseRedraws(line);
      }
      const div = h('div', { class: 'sv-log-line' }, shown || '\u200b');
      if (ev) {
        div.classList.add('sv-log-line--task');
        div.hidden = !shown;
      } else if (!shown && line.includes('\r')) {
        div.hidden = true; // a bar cleared before a line of its own
      }
      if (line.startsWith('==> soopervisor:')) {
        div.classList.add('sv-log-line--stage');
      } else if (line.startsWith(FAIL_MARK)) {
        div.classList.add('sv-log-line--mark');
      }
      this._lines.push(div);
      frag.append(div);
    }
    el.append(frag);
    if (task) {
      this.task = task;
      this._showProgress(task);
    }
    el.dataset.lines = String(log.lines.length);
    this._renderState(); // "Live — n lines" counts the lines as they come, not only at state changes
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
    // the progress stays in the state line unless the panel placed it elsewhere
    const ownProgress = !this.progress.parentElement || this.progress.parentElement === this.state;
    this.state.replaceChildren(
      text[log.state],
      log.state === 'error' ? h('button', { class: 'sv-link', onclick: () => log.retry() }, ' Retry') : '',
      ownProgress ? this.progress : ''
    );
  }

  private _lines: HTMLElement[] = [];
  private _follow = true;
}
