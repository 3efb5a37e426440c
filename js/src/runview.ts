/**
 * The run view: one run in JupyterLab's main area (`soopervisor:open-run {runId}`).
 * Its header (rundetail.ts), status and timings, the stages and tasks read from
 * the log, the whole log wrapped with a search, and the files of the run's own
 * set. Live while the run goes on (its own log stream, the record polled), then
 * the final state.
 */
import { MainAreaWidget, Notification, WidgetTracker } from '@jupyterlab/apputils';
import { Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import { ApiError, IArtifactFile, ICommitDetail, IRun, enc, isRunning, runPlace, runQuery } from './api';
import { moveFocus } from './commits';
import { errorBox, fmtDuration, fmtSize, fmtWhen, h } from './dom';
import { ITaskEvent, LogView, parseTaskLine } from './logview';
import { LogStream } from './logstream';
import { Loop } from './model';
import { failureBanner, runDuration, runHeaderLine, shownKey } from './rundetail';
import { IViewContext } from './viewcontext';

export const OPEN_RUN = 'soopervisor:open-run';
/** H3's command: the commit view of a commit, on this run's set. */
const OPEN_COMMIT = 'soopervisor:open-commit';
/** The record is asked for this often while the run goes on (the log itself streams). */
const POLL_MS = 2_000;

const STAGE_START = '==> soopervisor: ';
const STAGE_DONE = /^<== soopervisor: (.+) done in (\d+)s/;
const STAGE_FAILED = /^!!! soopervisor: (.+) failed with exit code (\d+)/;

interface IStage {
  name: string;
  state: string;
  seconds: number | null;
  /** the log line announcing it: the stage's name scrolls the log there */
  line: number;
}

interface ITask {
  name: string;
  state: string;
  started: number | null;
  seconds: number | null;
  error: string | null;
  line: number;
}

/**
 * The stages (`==> soopervisor:` markers of the script) and tasks (the task events) of a log,
 * read as lines arrive. Names come from the log; the state a stage or task was left in when
 * the run ended is the run's status.
 */
class Outline {
  stages: IStage[] = [];
  tasks: ITask[] = [];
  total: number | null = null;
  done = 0;

  read(lines: string[], from: number): void {
    for (let i = from; i < lines.length; i++) {
      const line = lines[i];
      const ev = parseTaskLine(line);
      if (ev) {
        this._task(ev, i);
        continue;
      }
      if (line.startsWith(STAGE_START)) {
        this.stages.push({ name: line.slice(STAGE_START.length).trim(), state: 'running', seconds: null, line: i });
        continue;
      }
      const done = STAGE_DONE.exec(line) ?? STAGE_FAILED.exec(line);
      if (done) {
        const stage = this._open(this.stages, done[1]);
        if (stage) {
          const failed = line.startsWith('!!!');
          stage.state = failed ? `failed (exit code ${done[2]})` : 'done';
          stage.seconds = failed ? null : Number(done[2]);
        }
      }
    }
  }

  /** What a stage or task still open is once the run ended: its status (succeeded: done). */
  close(status: string): void {
    const state = status === 'succeeded' ? 'done' : status;
    for (const item of [...this.stages, ...this.tasks]) {
      if (item.state === 'running') {
        item.state = state;
      }
    }
  }

  private _task(ev: ITaskEvent, line: number): void {
    this.total = ev.total;
    this.done = ev.done;
    if (!ev.task) {
      return;
    }
    let task = this._open(this.tasks, ev.task) ?? null;
    if (!task || ev.event === 'started') {
      task = { name: ev.task, state: 'running', started: ev.at ?? null, seconds: null, error: null, line };
      this.tasks.push(task);
    }
    if (ev.event === 'finished' || ev.event === 'failed' || ev.event === 'skipped') {
      task.state = ev.event === 'finished' ? 'done' : ev.event;
      // `at` is the container's clock: both ends of a task come from it
      task.seconds = task.started !== null && ev.at !== undefined ? ev.at - task.started : null;
      task.error = ev.error ?? null;
    }
  }

  /** The last item of that name still running. */
  private _open<T extends { name: string; state: string }>(items: T[], name: string): T | undefined {
    for (let i = items.length - 1; i >= 0; i--) {
      if (items[i].name === name && items[i].state === 'running') {
        return items[i];
      }
    }
    return undefined;
  }
}

function short(value: unknown, n: number): string {
  return String(value).slice(0, n);
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * Search in a LogView's lines: case-insensitive, every match marked with `<mark>`, "n of m",
 * Enter / Shift+Enter (or the buttons) for the next / previous match. Lines arriving later
 * are searched as they come. The LogView makes one element per line, in order, and never
 * rewrites one: a line's text is read once, and only the lines holding marks are redrawn.
 */
class LogSearch {
  readonly node: HTMLElement;

  constructor(private _view: LogView) {
    this._input = h('input', {
      type: 'search',
      class: 'sv-rv-search-input jp-mod-styled',
      placeholder: 'Search the log',
      'aria-label': 'Search the log',
      'data-testid': 'sv-log-search',
      oninput: () => this._setQuery(this._input.value),
      onkeydown: (e: KeyboardEvent) => {
        if (e.key === 'Enter') {
          e.preventDefault();
          this.step(e.shiftKey ? -1 : 1);
        } else if (e.key === 'Escape' && this._input.value) {
          e.preventDefault();
          this._input.value = '';
          this._setQuery('');
        }
      }
    }) as HTMLInputElement;
    const button = (label: string, title: string, testid: string, by: number) =>
      h(
        'button',
        { type: 'button', class: 'sv-icon-button', title, 'aria-label': title, 'data-testid': testid, onclick: () => this.step(by) },
        label
      );
    this.node = h(
      'div',
      { class: 'sv-rv-search', role: 'search' },
      this._input,
      this._count,
      button('↑', 'Previous match (Shift+Enter)', 'sv-log-search-prev', -1),
      button('↓', 'Next match (Enter)', 'sv-log-search-next', 1)
    );
    _view.stream.linesAdded.connect(() => this._read(), this);
    this._read();
  }

  /** Move to the next (1) or previous (-1) match, round the ends. */
  step(by: number): void {
    const n = this._marks.length;
    if (!n) {
      return;
    }
    this._select((this._current + by + n) % n, true);
  }

  dispose(): void {
    Signal.clearData(this);
  }

  /** New lines: searched as they come; the current match stays where it is. */
  private _read(): void {
    const rows = this._view.log.children;
    const from = this._texts.length;
    for (let i = from; i < rows.length; i++) {
      const row = rows[i] as HTMLElement;
      this._texts.push(row.hidden ? '' : row.textContent ?? '');
    }
    if (this._pattern && rows.length > from) {
      this._markFrom(from);
      if (this._current < 0 && this._marks.length) {
        this._select(0, false); // the first match, without pulling the reader's scroll there
      }
      this._renderCount();
    }
  }

  private _setQuery(query: string): void {
    for (const i of this._marked) {
      const row = this._view.log.children[i] as HTMLElement | undefined;
      if (row) {
        row.textContent = this._texts[i];
      }
    }
    this._marked = [];
    this._marks = [];
    this._current = -1;
    this._pattern = query ? new RegExp(escapeRegExp(query), 'gi') : null;
    if (this._pattern) {
      this._markFrom(0);
      if (this._marks.length) {
        this._select(0, true);
      }
    }
    this._renderCount();
  }

  private _markFrom(from: number): void {
    const pattern = this._pattern!;
    const rows = this._view.log.children;
    for (let i = from; i < this._texts.length; i++) {
      const text = this._texts[i];
      pattern.lastIndex = 0;
      if (!text || !pattern.test(text)) {
        continue;
      }
      pattern.lastIndex = 0;
      const frag = document.createDocumentFragment();
      let at = 0;
      for (let m = pattern.exec(text); m; m = pattern.exec(text)) {
        frag.append(text.slice(at, m.index));
        const mark = h('mark', { class: 'sv-rv-mark' }, m[0]);
        this._marks.push(mark);
        frag.append(mark);
        at = m.index + m[0].length;
      }
      frag.append(text.slice(at));
      (rows[i] as HTMLElement).replaceChildren(frag);
      this._marked.push(i);
    }
  }

  private _select(i: number, scroll: boolean): void {
    this._marks[this._current]?.classList.remove('sv-rv-mark--current');
    this._current = i;
    const mark = this._marks[i];
    mark.classList.add('sv-rv-mark--current');
    if (scroll) {
      mark.scrollIntoView({ block: 'center' });
    }
    this._renderCount();
  }

  private _renderCount(): void {
    const n = this._marks.length;
    this._count.dataset.count = String(n);
    this._count.dataset.current = String(this._current + 1);
    this._count.textContent = !this._pattern ? '' : n ? `${this._current + 1} of ${n}` : 'No matches';
  }

  private _input: HTMLInputElement;
  private _count = h('span', { class: 'sv-muted sv-nowrap', role: 'status', 'data-testid': 'sv-log-search-count' });
  /** each line's shown text ('' for a hidden one) */
  private _texts: string[] = [];
  private _pattern: RegExp | null = null;
  /** the lines holding marks, to give back their plain text */
  private _marked: number[] = [];
  private _marks: HTMLElement[] = [];
  private _current = -1;
}

function section(title: string, testid: string, ...body: (HTMLElement | null)[]): HTMLElement {
  const id = `sv-rv-h-${testid}-${Math.random().toString(36).slice(2, 8)}`;
  return h(
    'section',
    { class: 'sv-section sv-rv-section', 'data-testid': testid, 'aria-labelledby': id },
    h('h3', { id }, title),
    ...body
  );
}

function table(caption: string, head: string[], rows: HTMLElement[], testid: string): HTMLElement {
  return h(
    'table',
    { class: 'sv-rv-table', 'data-testid': testid },
    h('caption', { class: 'sv-rv-hidden-caption' }, caption),
    h('thead', {}, h('tr', {}, ...head.map(t => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, ...rows)
  );
}

/** An ISO time as the local time, with "5m ago" beside it. */
function when(iso: string | null): HTMLElement | string {
  if (!iso) {
    return '—';
  }
  return h(
    'span',
    { title: iso },
    new Date(iso).toLocaleString(),
    ' ',
    // data-when: the view's ticker keeps "5m ago" true
    h('span', { class: 'sv-muted', 'data-when': iso, 'data-prefix': '(', 'data-suffix': ')' }, `(${fmtWhen(iso)})`)
  );
}

/** The main-area widget's content: one run. */
export class RunView extends Widget {
  constructor(
    private _ctx: IViewContext,
    readonly runId: string
  ) {
    super();
    // sv-panel: the theme-derived colours and focus rings of base.css
    this.addClass('sv-panel');
    this.addClass('sv-runview');
    this.node.dataset.testid = 'sv-runview';
    this.node.dataset.runId = runId;
    this.node.setAttribute('aria-label', `soopervisor run ${runId}`);
    this._stream = new LogStream(_ctx.client, runId);
    this._logView = new LogView(this._stream, () => this._run);
    this._search = new LogSearch(this._logView);
    this._stream.linesAdded.connect((_, from) => this._onLines(from), this);
    this._stream.stateChanged.connect(() => this._onLogState(), this);
    this.node.append(
      h(
        'div',
        { class: 'sv-rv-head' },
        h('h2', {}, 'Run ', h('code', {}, runId), ' ', this._where),
        this._header,
        this._action
      ),
      this._grid
    );
    this._grid.append(
      h(
        'div',
        { class: 'sv-rv-col' },
        section('Status and timings', 'sv-rv-status', this._status),
        section('Stages', 'sv-rv-stages', this._stages),
        section('Tasks', 'sv-rv-tasks', this._tasks),
        section('Files of this run', 'sv-rv-manifest', this._manifest)
      ),
      h(
        'div',
        { class: 'sv-rv-col sv-rv-logcol' },
        section('Log', 'sv-rv-log', this._search.node, this._logView.log, this._logView.state)
      )
    );
    this._renderOutline();
    this._loop.refresh();
    this._ticker = window.setInterval(() => this._tick(), 1000);
  }

  get run(): IRun | null {
    return this._run;
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    window.clearInterval(this._ticker);
    this._loop.dispose();
    this._search.dispose();
    this._stream.dispose();
    Signal.clearData(this);
    super.dispose();
  }

  private async _fetch(): Promise<void> {
    try {
      this._setRun(await this._ctx.client.request<IRun>(`runs/${enc(this.runId)}`));
    } catch (e) {
      const err = e as ApiError;
      if (!this._run) {
        // nothing to show yet: say why; a run that does not exist is not asked for again
        if (err.status === 404) {
          this._loop.dispose();
          this._stream.dispose();
          this._grid.hidden = true;
        }
        this._header.replaceChildren(
          errorBox(
            err.status === 404 ? `There is no run ${this.runId}` : `Cannot read run ${this.runId}: ${err.message}`,
            err.hint ?? (err.status === 404 ? 'it may be gone from the run history; open a run from the soopervisor panel' : null),
            'sv-rv-error',
            err.docs
          )
        );
      }
      return;
    }
    if (this._run && !isRunning(this._run)) {
      this._loop.dispose(); // an ended run's record does not change
    }
  }

  /** The end of the log carries the final record: shown at once, without waiting for the poll. */
  private _onLogState(): void {
    if (this._stream.state === 'ended' && this._stream.endRun) {
      this._setRun(this._stream.endRun);
    }
  }

  private _setRun(run: IRun): void {
    if (this.isDisposed || JSON.stringify(run) === JSON.stringify(this._run)) {
      return;
    }
    this._run = run;
    this.node.dataset.status = run.status;
    this.title.caption = `soopervisor: ${run.mode} run ${run.id} of ${run.project} at ${run.commit}, ${run.status}`;
    this._where.textContent = `${run.project} at ${run.short_commit}`;
    // the record also changes for what the view does not show (the owner's lease, every few
    // seconds): redrawing only on a change it shows keeps the focus on Stop and the text selectable
    const key = shownKey(run);
    if (key !== this._shownKey) {
      this._shownKey = key;
      this._renderHeader(run);
      this._renderStatus(run);
    }
    if (!isRunning(run)) {
      this._outline.close(run.status);
      this._renderOutline();
      this._renderManifest(run);
    }
    this._logView.runChanged();
  }

  private _renderHeader(run: IRun): void {
    const stop = {
      testid: 'sv-rv-stop',
      className: 'jp-Button jp-mod-styled jp-mod-warn sv-stop',
      act: () => this._stop(run.id)
    };
    this._header.replaceChildren(runHeaderLine(run, { project: true, stop }), failureBanner(run) ?? '');
  }

  private async _stop(id: string): Promise<void> {
    this._action.replaceChildren();
    try {
      this._setRun(await this._ctx.client.post<IRun>(`runs/${enc(id)}/stop`, {}));
    } catch (e) {
      const err = e as ApiError;
      this._action.replaceChildren(errorBox(`Cannot stop the run: ${err.message}`, err.hint, 'sv-rv-action-error', err.docs));
    }
  }

  private _renderStatus(run: IRun): void {
    const rows: [string, HTMLElement | string][] = [
      ['Status', run.status === 'queued' ? 'queued: waiting for a worker' : run.status],
      ['Project', h('span', { title: run.project_path }, run.project)],
      ['Commit', h('code', { class: 'sv-sha' }, run.commit + (run.dirty ? ' (uncommitted changes not included)' : ''))],
      ['Mode', run.mode],
      ['Ran on', h('span', { 'data-testid': 'sv-rv-where', title: run.executor ?? '' }, runPlace(run))],
      ['Started', run.started_at ? when(run.started_at) : 'not started yet'],
      ['Finished', isRunning(run) ? 'still running' : when(run.finished_at)],
      ['Duration', h('span', { class: 'sv-duration', 'data-run-id': run.id }, runDuration(run) || '—')],
      ['Image', run.image ? h('code', {}, run.image) : '—']
    ];
    if (run.exit_code !== null) {
      rows.push(['Exit code', String(run.exit_code)]);
    }
    this._status.replaceChildren(
      h('dl', { class: 'sv-rv-facts' }, ...rows.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]))
    );
  }

  private _onLines(from: number): void {
    this._outline.read(this._stream.lines, from);
    this._renderOutline();
  }

  /** The stages and tasks tables; redrawn only when what they show changed. */
  private _renderOutline(): void {
    const o = this._outline;
    const key = JSON.stringify([o.stages, o.tasks, o.total, o.done]);
    if (key === this._outlineKey) {
      return;
    }
    this._outlineKey = key;
    const goto = (name: string, line: number) =>
      h(
        'button',
        { type: 'button', class: 'sv-rv-goto', title: `Show line ${line + 1} of the log`, onclick: () => this._showLine(line) },
        name
      );
    // one row per stage or task: its name (a link to its line), its state, its duration, an error
    const row = (testid: string, item: IStage | ITask, error?: string | null) =>
      h(
        'tr',
        { 'data-testid': testid, 'data-name': item.name, 'data-state': item.state },
        h('td', {}, goto(item.name, item.line)),
        h('td', {}, h('span', { class: `sv-rv-state sv-rv-state--${item.state.split(' ')[0]}` }, item.state)),
        h('td', {}, item.seconds === null ? '' : fmtDuration(item.seconds)),
        error === undefined ? null : h('td', { class: 'sv-rv-error' }, error ?? '')
      );
    this._stages.replaceChildren(
      o.stages.length
        ? table('Stages of the run', ['Stage', 'State', 'Duration'], o.stages.map(s => row('sv-rv-stage', s)), 'sv-rv-stage-table')
        : h('div', { class: 'sv-muted' }, 'No stage has started yet.')
    );
    const tasks = o.tasks.map(t => row('sv-rv-task', t, t.error));
    const empty = o.total === null ? 'No task events yet (they come from the build stage).' : 'No task has started yet.';
    this._tasks.replaceChildren(
      o.total !== null
        ? h('div', { class: 'sv-muted', 'data-testid': 'sv-rv-task-count' }, `${o.done} of ${o.total} task${o.total === 1 ? '' : 's'} done`)
        : '',
      tasks.length
        ? table('Tasks of the pipeline', ['Task', 'State', 'Duration', 'Error'], tasks, 'sv-rv-task-table')
        : h('div', { class: 'sv-muted' }, empty)
    );
  }

  /** Scroll the log to a line (a stage's or a task's start). */
  private _showLine(line: number): void {
    const row = this._logView.log.children[line] as HTMLElement | undefined;
    if (row) {
      this._logView.log.scrollTop = row.offsetTop;
      row.classList.add('sv-rv-line--shown');
      window.setTimeout(() => row.classList.remove('sv-rv-line--shown'), 1500);
    }
  }

  private _renderManifest(run: IRun): void {
    if (this._manifestFor === run.id) {
      return;
    }
    this._manifestFor = run.id;
    this._manifest.replaceChildren(h('div', { class: 'sv-muted' }, 'Loading the files…'));
    this._ctx.model.commitDetail(run.commit, run.id, run.project).then(
      detail => this._showFiles(run, detail),
      (err: ApiError) =>
        this._manifest.replaceChildren(
          errorBox(
            err.status === 404 ? `No files were stored for this run: ${err.message}` : `Cannot list the files: ${err.message}`,
            err.hint,
            'sv-rv-manifest-error',
            err.docs
          )
        )
    );
  }

  private _showFiles(run: IRun, detail: ICommitDetail): void {
    const m = detail.manifest as Record<string, any>;
    const total = detail.files.reduce((n, f) => n + f.size, 0);
    const hidden = detail.files.filter(f => this._ctx.model.hiddenFile(f.name));
    const body = h('tbody', {}, ...detail.files.map(f => this._fileRow(run, detail, f)));
    const toggle = hidden.length
      ? h(
          'button',
          {
            type: 'button',
            class: 'sv-link',
            'aria-expanded': 'false',
            'data-testid': 'sv-rv-hidden-toggle',
            onclick: (e: MouseEvent) => {
              const b = e.currentTarget as HTMLButtonElement;
              const show = b.getAttribute('aria-expanded') !== 'true';
              b.setAttribute('aria-expanded', String(show));
              b.textContent = show ? `Hide the ${hidden.length} hidden` : `Show ${hidden.length} hidden (settings)`;
              body.querySelectorAll<HTMLElement>('tr[data-hidden]').forEach(tr => (tr.hidden = !show));
            }
          },
          `Show ${hidden.length} hidden (settings)`
        )
      : null;
    const openCommit = h(
      'button',
      {
        type: 'button',
        class: 'jp-Button jp-mod-styled sv-rv-open-commit',
        'data-testid': 'sv-rv-open-commit',
        title: `The commit ${run.commit}: all its sets, their files, compare with another commit`,
        onclick: () => {
          this._action.replaceChildren();
          this._ctx.app.commands
            .execute(OPEN_COMMIT, { project: run.project, commit: run.commit, runId: run.id })
            .catch((e: Error) => this._action.replaceChildren(errorBox(`Cannot open the commit view: ${e.message}`)));
        }
      },
      'Open commit view'
    );
    this._manifest.replaceChildren(
      h(
        'div',
        { class: 'sv-rv-manifest-line' },
        h('span', {}, `${detail.files.length} file${detail.files.length === 1 ? '' : 's'}, ${fmtSize(total)}`),
        // the image and environment the files came from: two runs with the same ones are comparable
        m.image_digest ? h('span', { class: 'sv-muted', title: `${m.image} ${m.image_digest}` }, `image ${short(m.image_digest, 19)}`) : null,
        m.env_hash ? h('span', { class: 'sv-muted', title: String(m.env_hash) }, `environment ${short(m.env_hash, 12)}`) : null,
        h('span', { class: 'sv-grow' }),
        openCommit
      ),
      detail.files.length
        ? h(
            'table',
            { class: 'sv-rv-table sv-rv-files', 'data-testid': 'sv-rv-files' },
            h('caption', { class: 'sv-rv-hidden-caption' }, 'Files stored by this run'),
            h(
              'thead',
              {},
              h(
                'tr',
                {},
                ...['Name', 'Size', 'sha256'].map(t => h('th', { scope: 'col' }, t)),
                h('th', { scope: 'col' }, h('span', { class: 'sv-rv-hidden-caption' }, 'Download'))
              )
            ),
            body
          )
        : h('div', { class: 'sv-muted' }, 'No files.'),
      toggle ?? ''
    );
  }

  private _fileRow(run: IRun, detail: ICommitDetail, f: IArtifactFile): HTMLElement {
    const ctx = this._ctx;
    const endpoint = `projects/${enc(run.project)}/commits/${enc(detail.commit)}/files/${enc(f.name)}${runQuery(run.id)}`;
    const href = ctx.client.link(endpoint);
    const problem = h('div');
    const name = ctx.opener.canOpen(f.name)
      ? h(
          'button',
          {
            type: 'button',
            class: 'sv-file-name sv-file-open sv-rv-file-open',
            'data-testid': 'sv-rv-file-open',
            title: `Open ${f.name} in JupyterLab (read-only)`,
            // arrows move between the files' names, as in the other lists
            onkeydown: (e: KeyboardEvent) => moveFocus(e, this._manifest, '.sv-rv-file-open'),
            onclick: (e: MouseEvent) => {
              const b = e.currentTarget as HTMLButtonElement;
              b.disabled = true;
              problem.replaceChildren();
              ctx.opener
                .open(run.project, detail.commit, run.id, f.name)
                .catch((err: ApiError) => problem.replaceChildren(errorBox(`Cannot open ${f.name}: ${err.message}`, err.hint)))
                .finally(() => (b.disabled = false));
            }
          },
          f.name
        )
      : h('span', { class: 'sv-file-name' }, f.name);
    const row = h(
      'tr',
      { 'data-testid': 'sv-rv-file', 'data-name': f.name },
      h('td', {}, name, problem),
      h('td', { class: 'sv-nowrap' }, fmtSize(f.size)),
      h('td', {}, h('code', { class: 'sv-sha', title: f.sha256 }, f.sha256.slice(0, 12))),
      h(
        'td',
        {},
        href
          ? h(
              'a',
              { class: 'sv-download', href, download: f.name.split('/').pop() ?? f.name, title: `Download ${f.name}`, 'aria-label': `Download ${f.name}` },
              '⤓'
            )
          : null
      )
    );
    if (ctx.model.hiddenFile(f.name)) {
      row.dataset.hidden = '';
      row.hidden = true;
    }
    return row;
  }

  private _tick(): void {
    // relative times: a minute is their finest unit
    if (++this._ticks % 15 === 0) {
      this.node.querySelectorAll<HTMLElement>('[data-when]').forEach(el => {
        const d = el.dataset;
        const text = `${d.prefix ?? ''}${fmtWhen(d.when ?? null)}${d.suffix ?? ''}`;
        if (el.textContent !== text) {
          el.textContent = text;
        }
      });
    }
    if (this._run && isRunning(this._run)) {
      this.node.querySelectorAll(`.sv-duration[data-run-id="${this._run.id}"]`).forEach(el => {
        el.textContent = runDuration(this._run!);
      });
    }
  }

  private _run: IRun | null = null;
  private _stream: LogStream;
  private _logView: LogView;
  private _search: LogSearch;
  private _outline = new Outline();
  private _outlineKey = '';
  private _shownKey = '';
  private _manifestFor: string | null = null;
  private _loop = new Loop(() => this._fetch(), () => POLL_MS);
  private _ticker = 0;
  private _ticks = 0;
  private _grid = h('div', { class: 'sv-rv-grid' });
  private _where = h('span', { class: 'sv-muted sv-rv-where' });
  private _header = h('div', { class: 'sv-detail-header' }, h('div', { class: 'sv-muted' }, 'Loading the run…'));
  private _action = h('div', { class: 'sv-rv-action' });
  private _status = h('div');
  private _stages = h('div');
  private _tasks = h('div');
  private _manifest = h('div', { 'data-testid': 'sv-rv-manifest-body' });
}

/** `soopervisor:open-run {runId}`: opens the run's view, or shows the one already open. */
export function registerRunView(ctx: IViewContext): void {
  const tracker = new WidgetTracker<MainAreaWidget<RunView>>({ namespace: 'soopervisor-run' });
  ctx.restorer?.restore(tracker, {
    command: OPEN_RUN,
    args: w => ({ runId: w.content.runId }),
    name: w => w.content.runId
  });
  ctx.app.commands.addCommand(OPEN_RUN, {
    label: args => (typeof args.runId === 'string' ? `soopervisor: Open run ${args.runId}` : 'soopervisor: Open a run'),
    caption: 'A run in the main area: its log with search, stages, tasks, timings and files',
    icon: ctx.icon,
    execute: args => {
      const runId = typeof args.runId === 'string' ? args.runId : '';
      if (!runId) {
        Notification.warning('soopervisor: which run? open-run needs a runId', { autoClose: 8_000 });
        return null;
      }
      const open = tracker.find(w => w.content.runId === runId);
      if (open) {
        ctx.app.shell.activateById(open.id);
        return open;
      }
      const content = new RunView(ctx, runId);
      const widget = new MainAreaWidget({ content });
      widget.id = `soopervisor-run-${runId}`;
      widget.title.label = `run ${runId.slice(0, 6)}`;
      widget.title.caption = `soopervisor run ${runId}`;
      widget.title.icon = ctx.icon;
      widget.title.closable = true;
      void tracker.add(widget);
      ctx.app.shell.add(widget, 'main');
      ctx.app.shell.activateById(widget.id);
      return widget;
    }
  });
}
