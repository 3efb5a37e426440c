/**
 * One run's header line (status, mode, commit, duration, Stop) and its failure
 * banner: the sidebar, the dashboard and the run view show them alike, from this
 * one copy. Plain DOM, no JupyterLab import: the dashboard's bundle uses it too.
 */
import { IRun, isRunning } from './api';
import { badge, docsLink, elapsed, fmtDuration, h } from './dom';
import { failureSummary } from './logview';

/** The record's plain-words reason, where the API gives one (soopervisor/failure.py). */
interface IRunWithHint extends IRun {
  hint?: string | null;
}

/** The run's duration: the record's once it ended, else the time since it started (ticking). */
export function runDuration(run: IRun): string {
  return fmtDuration(run.duration ?? elapsed(run.started_at, isRunning(run) ? null : run.finished_at));
}

/**
 * What the header and the banner show of a run, as one string: the record also changes for what
 * they do not show (the owner's lease, every few seconds), and redrawing only when this changes
 * keeps the keyboard's focus on Stop and the text selectable.
 */
export function shownKey(run: IRun): string {
  return JSON.stringify([
    run.id, run.status, run.mode, run.commit, run.dirty, run.started_at, run.finished_at, run.duration,
    run.image, run.exit_code, run.failed_task, run.error, run.task_error, run.docs, (run as IRunWithHint).hint
  ]);
}

/** How a host offers Stop: its own look and test id, and what stopping does there. */
export interface IStopAction {
  testid: string;
  className: string;
  act: () => Promise<unknown>;
}

export interface IRunHeaderOptions {
  /** The project before the mode (the dashboard lists every project's runs). */
  project?: boolean;
  /** Stop while the run goes on; absent: no Stop (a read-only token). */
  stop?: IStopAction | null;
  /** More at the end of the line (the sidebar's ⤢). */
  extra?: (HTMLElement | null)[];
}

/** Badge, mode, commit, duration (its `.sv-duration[data-run-id]` ticks in the host), Stop. */
export function runHeaderLine(run: IRun, options: IRunHeaderOptions = {}): HTMLElement {
  const stop = options.stop && isRunning(run) ? stopButton(options.stop) : null;
  return h(
    'div',
    { class: 'sv-detail-line', 'data-testid': 'sv-run-header' },
    badge(run.status),
    h('span', {}, options.project ? `${run.project} · ${run.mode}` : run.mode),
    h('code', { class: 'sv-sha', title: run.commit }, run.short_commit),
    h('span', { class: 'sv-grow' }),
    h('span', { class: 'sv-muted sv-nowrap sv-duration', 'data-run-id': run.id }, runDuration(run)),
    stop,
    ...(options.extra ?? [])
  );
}

function stopButton(stop: IStopAction): HTMLElement {
  const label = '■ Stop';
  return h(
    'button',
    {
      type: 'button',
      class: stop.className,
      'data-testid': stop.testid,
      title: 'Stop the run and remove its container',
      onclick: (e: MouseEvent) => {
        const b = e.currentTarget as HTMLButtonElement;
        b.disabled = true;
        b.textContent = 'Stopping…';
        // the host redraws the line when the run changes; a failed stop gives the button back
        void stop.act().finally(() => {
          b.disabled = false;
          b.textContent = label;
        });
      }
    },
    label
  );
}

/**
 * A failed or interrupted run's banner: the failed task and its exception line, the error
 * naming the exit code once (failureSummary, as the CLI and the widget say it), the plain-words
 * hint when the record has one, and the troubleshooting link. Null for any other run.
 */
export function failureBanner(run: IRun): HTMLElement | null {
  if (run.status !== 'failed' && run.status !== 'interrupted') {
    return null;
  }
  const hint = (run as IRunWithHint).hint;
  return h(
    'div',
    { class: 'sv-failure', 'data-testid': 'sv-failure' },
    h('div', { class: 'sv-failure-summary' }, failureSummary(run)),
    // sv-muted: base.css gives muted text inside the banner the full text colour (contrast on the tint)
    hint ? h('div', { class: 'sv-hint sv-muted' }, hint) : null,
    docsLink(run.docs)
  );
}
