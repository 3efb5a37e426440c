/**
 * The dashboard's page: plain DOM like the sidebar (dom.ts), reusing its log
 * view, commit list and set files. Each part redraws only when the model says
 * it changed; the log appends lines.
 */
import { ApiError, IRun, isRunning } from '../api';
import { CommitList, showSetFiles } from '../commits';
import { badge, errorBox, fmtWhen, h } from '../dom';
import { LogView } from '../logview';
import { Load } from '../model';
import { failureBanner, runDuration, runHeaderLine, shownKey } from '../rundetail';
import { IJob, IRepository } from '../serverapi';
import { Change, DashboardModel } from './model';

/** Epoch seconds (the server's clock fields) as the ISO text fmtWhen reads. */
function iso(seconds: number | null | undefined): string | null {
  return typeof seconds === 'number' ? new Date(seconds * 1000).toISOString() : null;
}

function when(seconds: number | null | undefined): HTMLElement {
  const text = iso(seconds);
  return h('span', { title: text ?? '' }, text ? fmtWhen(text) : '—');
}

function section(title: string, id: string, ...body: (HTMLElement | null)[]): HTMLElement {
  return h(
    'section',
    { class: 'sv-section svd-section', 'aria-labelledby': `svd-h-${id}`, id: `svd-${id}` },
    h('h2', { id: `svd-h-${id}` }, title),
    ...body
  );
}

/** The rows of a loaded list, or its loading line, its error, its empty line. */
function loaded<T>(load: Load<T[]>, what: string, empty: string, rows: (items: T[]) => HTMLElement): HTMLElement[] {
  if (load.state === 'loading') {
    return [h('div', { class: 'sv-muted' }, `Loading ${what}…`)];
  }
  if (load.state === 'error') {
    return [errorBox(`Cannot list ${what}: ${load.error.message}`, load.error.hint, 'sv-error', load.error.docs)];
  }
  return load.value.length ? [rows(load.value)] : [h('div', { class: 'sv-empty' }, empty)];
}

/** Enter and Space act on a focusable row like a click; arrows move between rows. */
function rowKeys(select: () => void): (e: KeyboardEvent) => void {
  return (e: KeyboardEvent) => {
    const row = e.currentTarget as HTMLElement;
    if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      select();
    } else if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      e.preventDefault();
      const next = e.key === 'ArrowDown' ? row.nextElementSibling : row.previousElementSibling;
      (next as HTMLElement | null)?.focus();
    }
  };
}

export class DashboardView {
  readonly node: HTMLElement;

  constructor(
    readonly model: DashboardModel,
    signOut: () => void
  ) {
    this._commitList = new CommitList(model);
    this.node = h(
      'div',
      { class: 'sv-panel svd-app', 'data-testid': 'svd-app' },
      h(
        'header',
        { class: 'sv-header svd-header' },
        h('h1', {}, 'soopervisor'),
        this._version,
        h('span', { class: 'sv-grow' }),
        h('button', { class: 'svd-button', type: 'button', onclick: () => model.refreshAll() }, '↻ Refresh'),
        h(
          'a',
          {
            href: '#',
            class: 'svd-signout',
            'data-testid': 'svd-signout',
            onclick: (e: MouseEvent) => {
              e.preventDefault();
              signOut();
            }
          },
          'Sign out'
        )
      ),
      this._action,
      h(
        'main',
        { class: 'svd-grid' },
        h(
          'div',
          { class: 'svd-col' },
          section('Repositories', 'repositories', this._repos),
          section('Engines', 'engines', this._engines),
          section('Queue', 'queue', this._queue)
        ),
        h(
          'div',
          { class: 'svd-col' },
          section('Runs', 'runs', this._runs),
          this._detail,
          section('Artifacts by commit', 'commits', this._projectPicker, this._commits)
        )
      )
    );
    model.changed.connect((_, what) => this._render(what), this);
    for (const what of ['version', 'repositories', 'engines', 'queue', 'runs', 'selection', 'commits', 'action'] as Change[]) {
      this._render(what);
    }
    this._ticker = window.setInterval(() => this._tick(), 1000);
  }

  dispose(): void {
    window.clearInterval(this._ticker);
    this._commitList.dispose();
    this.model.dispose();
    this.node.remove();
  }

  private _render(what: Change): void {
    switch (what) {
      case 'version':
        this._version.textContent = this.model.version ? `server ${this.model.version}` : '';
        return;
      case 'repositories':
        return this._renderRepos();
      case 'queue':
        return this._renderQueue();
      case 'engines':
        return this._renderEngines();
      case 'runs':
        this._renderRuns();
        this._renderProjects();
        return this._renderDetailHeader();
      case 'selection':
        this._renderRuns();
        return this._renderDetail();
      case 'commits':
        this._renderProjects();
        return this._renderCommits();
      case 'action':
        this._renderAction();
        // a read-only token loses its buttons
        this._renderRepos();
        this._renderQueue();
        return this._renderDetailHeader(true);
    }
  }

  private _renderAction(): void {
    const err = this.model.actionError;
    const text = !err
      ? null
      : err.status === 403
        ? errorBox(
            `This token may only read: ${err.message}`,
            err.hint ?? 'pausing, polling, cancelling and stopping need an admin token: soopervisor serve token create --admin',
            'svd-action-error'
          )
        : errorBox(err.message, err.hint, 'svd-action-error', err.docs);
    this._action.replaceChildren(...(text ? [text] : []));
    this._action.hidden = !text;
  }

  private _adminButton(label: string, title: string, testid: string, act: () => Promise<void>): HTMLElement | null {
    if (this.model.readOnly) {
      return null;
    }
    return h(
      'button',
      {
        type: 'button',
        class: 'svd-button',
        title,
        'data-testid': testid,
        onclick: (e: MouseEvent) => {
          const b = e.currentTarget as HTMLButtonElement;
          b.disabled = true;
          void act().finally(() => (b.disabled = false));
        }
      },
      label
    );
  }

  private _renderRepos(): void {
    const m = this.model;
    this._repos.replaceChildren(
      ...loaded(m.repositories, 'the repositories', 'No repositories: add some to server.yaml.', repos =>
        h(
          'table',
          { class: 'svd-table', 'data-testid': 'svd-repos' },
          h(
            'thead',
            {},
            h('tr', {}, ...['Repository', 'Heads', 'Last commits', 'Last poll', 'Status', ''].map(t => h('th', { scope: 'col' }, t)))
          ),
          h('tbody', {}, ...repos.map(r => this._repoRow(r)))
        )
      )
    );
  }

  private _repoRow(r: IRepository): HTMLElement {
    const heads = Object.entries(r.heads ?? {});
    let status: HTMLElement;
    if (r.paused) {
      status = h('span', { class: 'svd-state svd-state--paused' }, 'paused');
    } else if (r.last_error) {
      const retry = r.backoff ? iso(r.next_poll) : null;
      status = h(
        'div',
        { class: 'svd-repo-error', role: 'note' },
        h('span', { class: 'svd-state svd-state--error' }, `failing (${r.failures}×)`),
        h('div', { class: 'svd-small' }, r.last_error),
        retry ? h('div', { class: 'sv-muted svd-small', title: retry }, `backing off: next try ${fmtIn(retry)}`) : null
      );
    } else {
      status = h('span', { class: 'svd-state svd-state--ok' }, r.poll_now ? 'polling now' : 'ok');
    }
    return h(
      'tr',
      { 'data-testid': 'svd-repo-row', 'data-name': r.name, 'data-paused': String(r.paused) },
      h('th', { scope: 'row' }, h('div', {}, r.name), h('div', { class: 'sv-muted svd-small svd-url' }, r.url)),
      h(
        'td',
        {},
        heads.length
          ? h(
              'ul',
              { class: 'svd-heads' },
              ...heads.map(([branch, sha]) =>
                h('li', { 'data-branch': branch }, `${branch} `, h('code', { class: 'sv-sha', title: sha }, sha.slice(0, 7)))
              )
            )
          : h('span', { class: 'sv-muted' }, 'not polled yet')
      ),
      h('td', {}, this._lastJobs(r.jobs ?? [])),
      h('td', {}, when(r.last_poll)),
      h('td', {}, status),
      h(
        'td',
        { class: 'svd-actions' },
        this._adminButton(
          r.paused ? 'Resume' : 'Pause',
          r.paused ? `Poll ${r.name} again` : `Stop polling ${r.name} (a run under way goes on)`,
          r.paused ? 'svd-repo-resume' : 'svd-repo-pause',
          () => this.model.repositoryAction(r.name, r.paused ? 'resume' : 'pause')
        ),
        this._adminButton('Poll now', `Poll ${r.name} now`, 'svd-repo-poll', () =>
          this.model.repositoryAction(r.name, 'poll')
        )
      )
    );
  }

  /** The repository's last jobs: commit, state, and its run's log a click away. */
  private _lastJobs(jobs: IJob[]): HTMLElement {
    if (!jobs.length) {
      return h('span', { class: 'sv-muted' }, 'none yet');
    }
    return h(
      'ul',
      { class: 'svd-heads' },
      ...jobs.map(j =>
        h(
          'li',
          { 'data-commit': j.commit },
          badge(j.state),
          ' ',
          j.run_id
            ? h(
                'a',
                {
                  href: '#',
                  class: 'sv-sha',
                  title: `${j.commit} (${j.branch}, ${j.project}): show run ${j.run_id}`,
                  onclick: (e: MouseEvent) => {
                    e.preventDefault();
                    this.model.selectRun(j.run_id);
                  }
                },
                j.commit.slice(0, 7)
              )
            : h('code', { class: 'sv-sha', title: j.commit }, j.commit.slice(0, 7)),
          h('span', { class: 'sv-muted svd-small' }, ` ${j.branch}`)
        )
      )
    );
  }

  private _renderQueue(): void {
    this._queue.replaceChildren(
      ...loaded(this.model.jobs, 'the queue', 'No jobs yet: a new commit on a polled branch makes one.', jobs =>
        h(
          'table',
          { class: 'svd-table', 'data-testid': 'svd-queue' },
          h(
            'thead',
            {},
            h('tr', {}, ...['Job', 'Commit', 'State', 'Updated', ''].map(t => h('th', { scope: 'col' }, t)))
          ),
          h('tbody', {}, ...jobs.map(j => this._jobRow(j)))
        )
      )
    );
  }

  private _renderEngines(): void {
    this._engines.replaceChildren(
      ...loaded(this.model.engines, 'the engines', 'No engine: the server runs nothing.', engines =>
        h(
          'table',
          { class: 'svd-table', 'data-testid': 'svd-engines' },
          h('thead', {}, h('tr', {}, ...['Engine', 'Busy', 'State'].map(t => h('th', { scope: 'col' }, t)))),
          h(
            'tbody',
            {},
            ...engines.map(e =>
              h(
                'tr',
                { 'data-testid': 'svd-engine-row', 'data-engine': e.name, 'data-held': String(e.held) },
                h('th', { scope: 'row' }, h('div', {}, e.name), h('div', { class: 'sv-muted svd-small' }, e.where)),
                h('td', { 'data-testid': 'svd-engine-busy' }, `${e.busy} of ${e.slots}`),
                h(
                  'td',
                  {},
                  e.held
                    ? h('span', { title: e.hint ?? '' }, `held: ${e.reason ?? 'it does not answer'}`)
                    : h('span', { class: 'sv-muted' }, e.free ? `${e.free} free` : 'full')
                )
              )
            )
          )
        )
      )
    );
  }

  private _jobRow(j: IJob): HTMLElement {
    const running = j.state === 'queued' || j.state === 'running';
    return h(
      'tr',
      { 'data-testid': 'svd-job-row', 'data-job-id': j.id, 'data-state': j.state },
      h(
        'th',
        { scope: 'row' },
        h('div', {}, `${j.repository} `, h('span', { class: 'sv-muted' }, j.project === '.' ? '' : j.project)),
        h('div', { class: 'sv-muted svd-small' }, `${j.branch} · ${j.mode}`)
      ),
      h('td', {}, h('code', { class: 'sv-sha', title: j.commit }, j.commit.slice(0, 7))),
      h(
        'td',
        {},
        badge(j.state),
        j.attempts > 1 ? h('span', { class: 'sv-muted svd-small' }, ` attempt ${j.attempts}`) : null,
        j.error ? h('div', { class: 'svd-small' }, j.error) : null
      ),
      h('td', {}, when(j.updated_at)),
      h(
        'td',
        { class: 'svd-actions' },
        j.run_id
          ? h('button', { type: 'button', class: 'svd-button', onclick: () => this.model.selectRun(j.run_id) }, 'Log')
          : null,
        running
          ? this._adminButton('Cancel', 'Cancel this job', 'svd-job-cancel', () => this.model.jobAction(j.id, 'cancel'))
          : this._adminButton('Retry', 'Queue this job again', 'svd-job-retry', () => this.model.jobAction(j.id, 'retry'))
      )
    );
  }

  private _renderRuns(): void {
    const m = this.model;
    this._runs.replaceChildren(
      ...loaded(m.runs, 'runs', 'No runs yet.', runs =>
        h(
          'ul',
          { class: 'sv-runs svd-runs', role: 'listbox', 'aria-label': 'Runs', 'data-testid': 'svd-runs' },
          ...runs.map(run => this._runRow(run))
        )
      )
    );
    if (this._focusRun) {
      (this._runs.querySelector(`[data-run-id="${this._focusRun}"]`) as HTMLElement | null)?.focus();
      this._focusRun = null;
    }
  }

  private _runRow(run: IRun): HTMLElement {
    const selected = run.id === this.model.selectedRunId;
    const select = () => {
      this._focusRun = run.id; // the list is rebuilt: keep the keyboard where it was
      this.model.selectRun(run.id);
    };
    return h(
      'li',
      {
        class: 'sv-run' + (selected ? ' sv-run--selected' : ''),
        'data-testid': 'svd-run-row',
        'data-run-id': run.id,
        'data-status': run.status,
        role: 'option',
        tabindex: '0',
        'aria-selected': String(selected),
        title: `run ${run.id}, commit ${run.commit}`,
        onclick: select,
        onkeydown: rowKeys(select)
      },
      h(
        'div',
        { class: 'sv-run-line' },
        badge(run.status),
        h('span', { class: 'svd-project' }, run.project),
        h('span', { class: 'sv-run-mode' }, run.mode),
        h('code', { class: 'sv-sha' }, run.short_commit),
        h('span', { class: 'sv-grow sv-muted', title: run.started_at ?? '' }, run.started_at ? `started ${fmtWhen(run.started_at)}` : 'not started yet'),
        h('span', { class: 'sv-muted sv-nowrap sv-duration', 'data-run-id': run.id }, this._duration(run))
      )
    );
  }

  private _duration(run: IRun): string {
    return runDuration(run);
  }

  private _tick(): void {
    if (this.model.runs.state !== 'ready') {
      return;
    }
    for (const run of this.model.runs.value.filter(isRunning)) {
      this.node.querySelectorAll(`.sv-duration[data-run-id="${run.id}"]`).forEach(el => {
        el.textContent = this._duration(run);
      });
    }
  }

  /** A new selection: a fresh log view on the model's new stream. */
  private _renderDetail(): void {
    const log = this.model.log;
    this._artifactsRun = null;
    if (!log) {
      this._logView = null;
      this._detail.replaceChildren();
      this._detail.hidden = true;
      return;
    }
    this._detail.hidden = false;
    this._logView = new LogView(log, () => this.model.selectedRun);
    this._detailHeader = h('div', { class: 'sv-detail-header' });
    this._artifacts = h('div', { class: 'svd-run-artifacts', 'data-testid': 'svd-run-artifacts' });
    this._detail.replaceChildren(
      h('h2', { id: 'svd-h-detail' }, 'Run ', h('code', {}, log.runId)),
      this._detailHeader,
      this._logView.log,
      this._logView.state,
      this._artifacts
    );
    this._renderDetailHeader(true);
  }

  /** Redrawn when what it shows changed (see shownKey), or with `force`. */
  private _renderDetailHeader(force = false): void {
    const run = this.model.selectedRun;
    if (!run || !this._logView || run.id !== this._logView.stream.runId) {
      return;
    }
    const key = shownKey(run);
    if (key === this._headerKey && !force) {
      this._logView.runChanged();
      return;
    }
    this._headerKey = key;
    this._detail.dataset.status = run.status;
    this._detail.dataset.runId = run.id;
    // a read-only token has no Stop
    const stop = this.model.readOnly
      ? null
      : { testid: 'svd-run-stop', className: 'svd-button', act: () => this.model.stopRun(run.id) };
    this._detailHeader.replaceChildren(runHeaderLine(run, { project: true, stop }), failureBanner(run) ?? '');
    this._logView.runChanged();
    this._renderRunArtifacts(run);
  }

  /** A finished run's own set: its files and the zip, behind a button (listing reads the storage). */
  private _renderRunArtifacts(run: IRun): void {
    if (isRunning(run)) {
      this._artifacts.replaceChildren();
      return;
    }
    if (this._artifactsRun === run.id) {
      return;
    }
    this._artifactsRun = run.id;
    const body = h('div', { class: 'sv-commit-body', 'data-testid': 'sv-commit-files', hidden: true });
    const toggle = h(
      'button',
      {
        type: 'button',
        class: 'svd-button',
        'aria-expanded': 'false',
        'data-testid': 'svd-run-artifacts-toggle',
        onclick: () => {
          const open = body.hidden;
          body.hidden = !open;
          toggle.setAttribute('aria-expanded', String(open));
          if (open && !body.childElementCount) {
            body.append(h('div', { class: 'sv-muted' }, 'Loading files…'));
            void showSetFiles(this.model, body, run.project, run.commit, run.id);
          }
        }
      },
      'Artifacts of this run'
    );
    this._artifacts.replaceChildren(toggle, body);
  }

  private _renderProjects(): void {
    const projects = this.model.projects;
    const current = this.model.project;
    const key = JSON.stringify([projects, current]);
    if (key === this._projectsKey) {
      return;
    }
    this._projectsKey = key;
    const select = h(
      'select',
      {
        id: 'svd-project',
        'data-testid': 'svd-project',
        onchange: (e: Event) => this.model.selectProject((e.currentTarget as HTMLSelectElement).value || null)
      },
      ...(current && !projects.includes(current) ? [current, ...projects] : projects).map(p =>
        h('option', { value: p, selected: p === current }, p)
      )
    );
    this._projectPicker.replaceChildren(h('label', { for: 'svd-project' }, 'Project '), select);
    this._projectPicker.hidden = !projects.length && !current;
  }

  private _renderCommits(): void {
    const c = this.model.commits;
    const project = this.model.project;
    this._commits.dataset.state = c.state;
    if (!project) {
      this._commits.replaceChildren(h('div', { class: 'sv-empty' }, 'No project has run yet.'));
      return;
    }
    if (c.state !== 'ready' || !c.value.length) {
      this._commits.replaceChildren(
        ...loaded(c, 'commits', 'No artifacts stored yet: a finished run stores them under its commit.', () => h('div'))
      );
      return;
    }
    this._commitList.update(c.value, project);
    if (this._commitList.node.parentElement !== this._commits) {
      this._commits.replaceChildren(this._commitList.node);
    }
  }

  private _version = h('span', { class: 'sv-muted', 'data-testid': 'svd-version' });
  private _action = h('div', { class: 'sv-banner', hidden: true, role: 'alert' });
  private _repos = h('div', { class: 'svd-box', 'data-testid': 'svd-repositories' });
  private _queue = h('div', { class: 'svd-box' });
  private _engines = h('div', { class: 'svd-box' });
  private _runs = h('div', { class: 'svd-box' });
  private _detail = h('section', {
    class: 'sv-section svd-section sv-detail',
    'data-testid': 'svd-run-detail',
    'aria-labelledby': 'svd-h-detail',
    hidden: true
  });
  private _projectPicker = h('div', { class: 'svd-picker' });
  private _commits = h('div', { class: 'sv-commits-box', 'data-testid': 'sv-commits' });
  private _commitList: CommitList;
  private _detailHeader = h('div');
  private _headerKey = '';
  private _artifacts = h('div');
  private _artifactsRun: string | null = null;
  private _logView: LogView | null = null;
  private _focusRun: string | null = null;
  private _projectsKey = '';
  private _ticker = 0;
}

/** "in 2m", "now": when the backed-off poller tries again. */
function fmtIn(isoText: string): string {
  const s = Math.round((Date.parse(isoText) - Date.now()) / 1000);
  if (s <= 0) {
    return 'now';
  }
  return s < 60 ? `in ${s}s` : `in ${Math.round(s / 60)}m`;
}

export function signInError(err: ApiError): { message: string; hint: string | null } {
  if (err.status === 401) {
    return {
      message: 'The server did not accept this token.',
      hint: 'Check it was copied whole, or make a new one: soopervisor serve --config server.yaml token create'
    };
  }
  if (err.status === 0) {
    return { message: `Cannot reach the server: ${err.message}`, hint: err.hint };
  }
  return { message: err.message, hint: err.hint };
}
