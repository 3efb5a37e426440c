/**
 * The sidebar's state: version check, validation, runs, the selected run's
 * log, commits with artifacts. It polls the server and emits signals; the
 * view (widget.ts) only renders what it is told (the jupyterlab-git split).
 */
import { ISignal, Signal } from '@lumino/signaling';

import { ApiClient, ApiError, ICommitDetail, ICommitSummary, IRemote, IReport, IRun, enc, isRunning } from './api';
import { LogStream } from './logstream';
import { DEFAULT_SETTINGS, ISidebarSettings, RunMode, isHidden } from './settings';

// eslint-disable-next-line @typescript-eslint/no-var-requires
declare function require(name: string): any;
/** The version of this frontend: package.json, which must equal soopervisor.__version__. */
export const FRONTEND_VERSION: string = require('../package.json').version;

const VALIDATE_EVERY_MS = 10_000;
const RUNS_BUSY_MS = 2_000;
const RUNS_IDLE_MS = 10_000;
const COMMITS_EVERY_MS = 10_000;
/** The server-wide watch behind the status bar and the end-of-run notifications. */
const ACTIVITY_BUSY_MS = 2_000;
const ACTIVITY_IDLE_MS = 15_000;

export type Load<T> =
  | { state: 'loading' }
  | { state: 'ready'; value: T }
  | { state: 'error'; error: ApiError };

export interface IVersionCheck {
  state: 'checking' | 'ok' | 'mismatch' | 'missing' | 'error';
  server: string | null;
  error?: ApiError;
}

/** Calls `fn` now and then every `interval()` ms; never two at once. */
export class Loop {
  constructor(
    private _fn: () => Promise<void>,
    private _interval: () => number
  ) {}

  /** Run now (or right after the call in flight), then resume the schedule. */
  refresh(): void {
    if (this._disposed) {
      return;
    }
    if (this._busy) {
      this._again = true;
      return;
    }
    window.clearTimeout(this._timer);
    this._busy = true;
    this._fn()
      .catch(e => console.error('soopervisor:', e))
      .finally(() => {
        this._busy = false;
        if (this._disposed) {
          return;
        }
        if (this._again) {
          this._again = false;
          this.refresh();
        } else {
          this._timer = window.setTimeout(() => this.refresh(), this._interval());
        }
      });
  }

  dispose(): void {
    this._disposed = true;
    window.clearTimeout(this._timer);
  }

  private _timer = 0;
  private _busy = false;
  private _again = false;
  private _disposed = false;
}

/** The query string naming one set (`?run=`) in a storage (`&storage=`, the sidebar's setting; '' the
 *  server's own). Every commit route takes both; a set never changes, so the pair names its bytes. */
export function setQuery(runId: string | null | undefined, storage = ''): string {
  const params: string[] = [];
  if (runId) {
    params.push(`run=${encodeURIComponent(runId)}`);
  }
  if (storage) {
    params.push(`storage=${encodeURIComponent(storage)}`);
  }
  return params.length ? `?${params.join('&')}` : '';
}

/** One set's files (GET …/commits/{commit}), each fetched once: the sidebar's and the dashboard's
 *  models hold one. A failed request is forgotten so that a retry asks again. */
export class SetCache {
  constructor(private _client: ApiClient) {}

  get(project: string, commit: string, runId: string | null, storage = ''): Promise<ICommitDetail> {
    const key = `${storage}\0${project}\0${commit}\0${runId ?? ''}`;
    let found = this._details.get(key);
    if (!found) {
      found = this._client.request<ICommitDetail>(`projects/${enc(project)}/commits/${enc(commit)}${setQuery(runId, storage)}`);
      found.catch(() => this._details.delete(key));
      this._details.set(key, found);
    }
    return found;
  }

  private _details = new Map<string, Promise<ICommitDetail>>();
}

export class SoopervisorModel {
  /** `client`: the sidebar's goes through Jupyter's ServerConnection (jupyter.ts). */
  constructor(readonly client: ApiClient) {}

  readonly frontendVersion = FRONTEND_VERSION;
  version: IVersionCheck = { state: 'checking', server: null };
  /** The folder validated: relative to the server root, '' is the root. */
  path = '';
  validation: Load<IReport> = { state: 'loading' };
  runs: Load<IRun[]> = { state: 'loading' };
  commits: Load<ICommitSummary[]> = { state: 'loading' };
  selectedRunId: string | null = null;
  log: LogStream | null = null;
  /** The last failure to start or stop a run, shown under the buttons. */
  actionError: ApiError | null = null;
  /** A run start in flight (buttons show it, and a second click is ignored). */
  starting: RunMode | null = null;
  /** The remotes runs may be sent to (GET /remotes); empty until loaded, or when the server lists none. */
  remotes: IRemote[] = [];
  /** Where runs started from this page go: a remote's name, or null for this machine ("Run on…"). */
  runOn: string | null = null;
  /** Why the remotes could not be listed (a broken remotes file, say); null when they were. */
  remotesError: ApiError | null = null;
  /** The Settings Editor's values (js/schema/plugin.json). */
  settings: ISidebarSettings = DEFAULT_SETTINGS;
  /** Runs going on the server, any project (the status bar counts them). */
  active: IRun[] = [];
  /** Set by the Lab plugin: opens an artifact file in JupyterLab (commits.ts shows the name as a button). */
  openFile?: (project: string, commit: string, runId: string | null, name: string) => Promise<void>;
  /** Set by the Lab plugin: whether JupyterLab has a viewer for a file name. */
  canOpen?: (name: string) => boolean;
  /** Set by the commit view (commitview.ts): opens a commit's sets in the main area; the commit
   *  list then shows an "open" button on each row. */
  openCommit?: (project: string, commit: string, runId: string | null) => void;

  /** Emitted with the name of what changed: 'version', 'validation', 'runs',
   *  'selection', 'commits', 'action', 'settings', 'activity', 'remotes'. */
  get changed(): ISignal<this, string> {
    return this._changed;
  }

  /** A run this page saw going has ended (succeeded, failed, cancelled, interrupted). */
  get runEnded(): ISignal<this, IRun> {
    return this._runEnded;
  }

  /** New settings: the panel re-renders what they change. */
  setSettings(settings: ISidebarSettings): void {
    if (JSON.stringify(settings) === JSON.stringify(this.settings)) {
      return;
    }
    const storageChanged = settings.storage !== this.settings.storage;
    this.settings = settings;
    if (storageChanged && this._started) {
      // another storage holds other commits: list them from scratch (before 'settings', whose
      // listeners, the commit views, must not read the old storage's list)
      this.commits = { state: 'loading' };
      this._emit('commits');
      this._commitsLoop.refresh();
    }
    this._emit('settings');
  }

  /** The query of a set's routes (files, zip, table): `?run=` and the storage of the settings. */
  setQuery(runId: string | null): string {
    return setQuery(runId, this.settings.storage);
  }

  /** Whether the settings hide an artifact file from the lists. */
  hiddenFile(name: string): boolean {
    return isHidden(name, this.settings.hiddenPatterns);
  }

  /** Begin the server-wide watch of running runs (status bar, notifications); later calls do nothing. */
  watchActivity(): void {
    if (!this._activityStarted) {
      this._activityStarted = true;
      this._activityLoop.refresh();
    }
  }

  get project(): string | null {
    return this.validation.state === 'ready' ? this.validation.value.project?.name ?? null : null;
  }

  get selectedRun(): IRun | null {
    if (this.runs.state !== 'ready' || !this.selectedRunId) {
      return null;
    }
    return this.runs.value.find(r => r.id === this.selectedRunId) ?? null;
  }

  /** Why runs cannot start now, or null when they can. */
  get blockedReason(): string | null {
    if (this.version.state === 'missing') {
      return 'the soopervisor server extension is not running';
    }
    const v = this.validation;
    if (v.state === 'loading') {
      return 'validating the project…';
    }
    if (v.state === 'error') {
      return `cannot validate: ${v.error.message}`;
    }
    if (!v.value.ok) {
      const n = v.value.problems.filter(p => p.severity === 'error').length;
      return `the project has ${n} problem${n === 1 ? '' : 's'} to fix first`;
    }
    if (this.starting) {
      return `starting a ${this.starting} run…`;
    }
    return null;
  }

  /** Check the version, then begin polling; later calls do nothing. */
  async start(): Promise<void> {
    if (this._startCalled) {
      return;
    }
    this._startCalled = true;
    await this._checkVersion();
    if (this.version.state === 'missing') {
      return; // every other call would 404: the banner says what to do
    }
    this._validate.refresh();
    void this._loadRemotes();
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    for (const loop of [this._validate, this._runsLoop, this._commitsLoop, this._activityLoop]) {
      loop.dispose();
    }
    this.log?.dispose();
    Signal.clearData(this);
  }

  /** The file browser moved: validate the new folder now. */
  setPath(path: string): void {
    if (path === this.path) {
      return;
    }
    this.path = path;
    this.validation = { state: 'loading' };
    this._emit('validation');
    if (this.version.state !== 'missing' && this.version.state !== 'checking') {
      this._validate.refresh();
    }
  }

  /** The refresh button: check the version again too (the server may have been
   *  upgraded and restarted since), then everything else. */
  async refreshAll(): Promise<void> {
    await this._checkVersion();
    if (this.version.state === 'missing') {
      return;
    }
    this._validate.refresh();
    this._runsLoop.refresh();
    this._commitsLoop.refresh();
    void this._loadRemotes();
  }

  /** "Run on…": where the next runs started here go (a remote's name; null: this machine). */
  setRunOn(remote: string | null): void {
    const next = remote && this.remotes.some(r => r.name === remote) ? remote : null;
    if (next !== this.runOn) {
      this.runOn = next;
      this._emit('remotes');
    }
  }

  selectRun(id: string | null): void {
    if (id === this.selectedRunId && (id === null || this.log)) {
      return;
    }
    this.selectedRunId = id;
    this.log?.dispose();
    // a new stream starts at line 0: after a reload the whole log comes back
    this.log = id ? new LogStream(this.client, id) : null;
    this.log?.stateChanged.connect(this._onLogState, this);
    this._emit('selection');
  }

  /** Start a run of the folder the panel shows, or of `path` (a folder relative to the server
   *  root: the server runs the project enclosing it), here or on the remote chosen ("Run on…").
   *  Resolves to the run, or null when it could not start (`actionError` says why). */
  async startRun(
    mode: RunMode = this.settings.defaultMode,
    path: string = this.path,
    remote: string | null = this.runOn
  ): Promise<IRun | null> {
    const here = path === this.path;
    // while the panel's check is still going (a command right after the page loaded), the
    // server's own check decides: it answers 422 with the report when the project is invalid
    if (this.starting || (here && this.validation.state !== 'loading' && this.blockedReason)) {
      return null;
    }
    this.starting = mode;
    this.actionError = null;
    this._emit('action');
    try {
      const { image, storage, secrets } = this.settings;
      const body: Record<string, unknown> = { path, mode };
      if (remote) {
        // the remote runs the pushed commit with its own image, storage and secrets
        body.remote = remote;
      } else {
        body.secrets = secrets;
        // empty: the server's own settings (c.Soopervisor.image / .storage)
        if (image) {
          body.image = image;
        }
        if (storage) {
          body.storage = storage;
        }
      }
      const run = await this.client.post<IRun>('runs', body);
      this._watch(run);
      if (run.project === this.project) {
        this._upsertRun(run);
        this.selectRun(run.id);
      }
      return run;
    } catch (e) {
      const err = e as ApiError;
      this.actionError = err;
      if (here && err.status === 422 && err.body?.report) {
        // the project became invalid since the last check: show why
        this.validation = { state: 'ready', value: { ...err.body.report, path: this.path } };
        this._emit('validation');
      }
      return null;
    } finally {
      this.starting = null;
      this._emit('action');
      this._runsLoop.refresh();
    }
  }

  /** Validate the panel's folder now. */
  validateNow(): void {
    if (this.version.state !== 'missing') {
      this._validate.refresh();
    }
  }

  /** Select a run, now if the panel lists it, else once a later poll lists it (the file browser
   *  is on its way to the run's project). */
  showRun(id: string): void {
    if (!(this.runs.state === 'ready' && this.runs.value.some(r => r.id === id))) {
      this._pendingRun = id;
    }
    this.selectRun(id);
  }

  async stopRun(id: string): Promise<void> {
    this.actionError = null;
    this._emit('action');
    try {
      this._upsertRun(await this.client.post<IRun>(`runs/${enc(id)}/stop`, {}));
    } catch (e) {
      this.actionError = e as ApiError;
      this._emit('action');
    }
    this._runsLoop.refresh();
  }

  /** One set's files, fetched once (a stored set never changes). `runId` names the set the
   *  commit list shows (every run keeps its own); null: the commit's set of the old layout.
   *  Read from the storage of the settings (the server's own when empty). */
  commitDetail(commit: string, runId: string | null = null, project = this.project): Promise<ICommitDetail> {
    if (!project) {
      return Promise.reject(new ApiError('no project', 0));
    }
    return this._sets.get(project, commit, runId, this.settings.storage);
  }

  private async _checkVersion(): Promise<void> {
    try {
      const { version } = await this.client.request<{ version: string }>('version');
      this.version = {
        state: version === this.frontendVersion ? 'ok' : 'mismatch',
        server: version
      };
    } catch (e) {
      const error = e as ApiError;
      this.version = { state: error.status === 404 ? 'missing' : 'error', server: null, error };
    }
    this._emit('version');
  }

  /** The remotes of the server's user; a failure leaves the list empty (runs go here) and says why. */
  private async _loadRemotes(): Promise<void> {
    let remotes: IRemote[] = [];
    let error: ApiError | null = null;
    try {
      ({ remotes } = await this.client.request<{ remotes: IRemote[] }>('remotes'));
    } catch (e) {
      error = e as ApiError;
    }
    if (this._disposed || JSON.stringify([remotes, error?.message]) === JSON.stringify([this.remotes, this.remotesError?.message])) {
      return;
    }
    this.remotes = remotes;
    this.remotesError = error;
    if (this.runOn && !remotes.some(r => r.name === this.runOn)) {
      this.runOn = null; // removed since: runs go here again, and the choice says so
    }
    this._emit('remotes');
  }

  private async _doValidate(): Promise<void> {
    const path = this.path;
    let next: Load<IReport>;
    try {
      next = {
        state: 'ready',
        value: await this.client.request<IReport>(`validate?path=${encodeURIComponent(path)}`)
      };
    } catch (e) {
      next = { state: 'error', error: e as ApiError };
    }
    if (path !== this.path || this._disposed) {
      return; // the user moved on meanwhile; that folder's check is queued
    }
    const before = this.project;
    const changed = JSON.stringify(next) !== JSON.stringify(this.validation);
    this.validation = next;
    if (changed) {
      this._emit('validation');
    }
    if (this.project !== before || !this._started) {
      this._started = true;
      this._projectChanged();
    }
  }

  private _projectChanged(): void {
    this.runs = { state: 'loading' };
    this.commits = { state: 'loading' };
    this._autoSelected = false;
    this.selectRun(null); // another project's run has no place here
    this._emit('runs');
    this._emit('commits');
    this._runsLoop.refresh();
    this._commitsLoop.refresh();
  }

  private async _doRuns(): Promise<void> {
    const project = this.project;
    if (!project) {
      this._setRuns({ state: 'ready', value: [] });
      return;
    }
    try {
      const { runs } = await this.client.request<{ runs: IRun[] }>(
        `runs?project=${encodeURIComponent(project)}&limit=100`
      );
      if (project !== this.project) {
        return;
      }
      const wasRunning = new Set(this._runningIds());
      this._setRuns({ state: 'ready', value: runs });
      // a run just finished: its artifacts are new
      if ([...wasRunning].some(id => !this._runningIds().includes(id))) {
        this._commitsLoop.refresh();
      }
      if (this._pendingRun && runs.some(r => r.id === this._pendingRun)) {
        this._autoSelected = true;
        this.selectRun(this._pendingRun);
        this._pendingRun = null;
      }
      // after a reload, follow the run that is still going
      if (!this._autoSelected && !this.selectedRunId) {
        this._autoSelected = true;
        const live = runs.find(isRunning);
        if (live) {
          this.selectRun(live.id);
        }
      }
    } catch (e) {
      this._setRuns({ state: 'error', error: e as ApiError });
    }
  }

  private async _doCommits(): Promise<void> {
    const project = this.project;
    const storage = this.settings.storage;
    if (!project) {
      this._setCommits({ state: 'ready', value: [] });
      return;
    }
    let next: Load<ICommitSummary[]>;
    try {
      const { commits } = await this.client.request<{ commits: ICommitSummary[] }>(
        `projects/${enc(project)}/commits${setQuery(null, storage)}`
      );
      next = { state: 'ready', value: commits };
    } catch (e) {
      const error = e as ApiError;
      // a project that never stored anything is not an error
      next = error.status === 404 ? { state: 'ready', value: [] } : { state: 'error', error };
    }
    if (project === this.project && storage === this.settings.storage) {
      this._setCommits(next);
    }
  }

  private _setRuns(next: Load<IRun[]>): void {
    if (JSON.stringify(next) !== JSON.stringify(this.runs)) {
      this.runs = next;
      this._emit('runs');
    }
  }

  private _setCommits(next: Load<ICommitSummary[]>): void {
    // skipping identical answers keeps a 1,000-commit list from re-rendering each poll
    if (JSON.stringify(next) !== JSON.stringify(this.commits)) {
      this.commits = next;
      this._emit('commits');
    }
  }

  private _upsertRun(run: IRun): void {
    const runs = this.runs.state === 'ready' ? this.runs.value.slice() : [];
    const i = runs.findIndex(r => r.id === run.id);
    if (i >= 0) {
      runs[i] = run;
    } else {
      runs.unshift(run);
    }
    this._setRuns({ state: 'ready', value: runs });
  }

  private _onLogState(log: LogStream): void {
    if (log.state === 'ended' && log.endRun) {
      this._upsertRun(log.endRun);
      this._runsLoop.refresh();
      this._commitsLoop.refresh();
    }
  }

  /** The server-wide poll: which runs are going, and which of those seen going have ended. */
  private async _doActivity(): Promise<void> {
    if (this.version.state === 'missing') {
      return; // every call would 404: the panel's banner says what to do
    }
    let runs: IRun[];
    try {
      ({ runs } = await this.client.request<{ runs: IRun[] }>('runs?limit=100'));
      // a watched run pushed out of the newest 100 by others: asked for by its id
      for (const id of this._watched) {
        if (!runs.some(r => r.id === id)) {
          try {
            runs.push(await this.client.request<IRun>(`runs/${enc(id)}`));
          } catch (e) {
            if ((e as ApiError).status === 404) {
              this._watched.delete(id); // gone from the server's history: nothing to tell
            }
          }
        }
      }
    } catch {
      return; // the panel shows the server's errors; the status bar keeps its last count
    }
    const active = runs.filter(isRunning);
    for (const run of active) {
      this._watched.add(run.id);
    }
    for (const id of [...this._watched]) {
      const run = runs.find(r => r.id === id);
      if (run && !isRunning(run)) {
        this._watched.delete(id);
        this._runEnded.emit(run);
        if (run.project === this.project) {
          this._runsLoop.refresh();
          this._commitsLoop.refresh();
        }
      }
    }
    if (JSON.stringify(active) !== JSON.stringify(this.active)) {
      this.active = active;
      this._emit('activity');
    }
  }

  /** A run started here: watched from now on, so a quick one still gets its notification. */
  private _watch(run: IRun): void {
    this._watched.add(run.id);
    if (isRunning(run) && !this.active.some(r => r.id === run.id)) {
      this.active = [run, ...this.active];
      this._emit('activity');
    }
    this._activityLoop.refresh();
  }

  private _runningIds(): string[] {
    return this.runs.state === 'ready' ? this.runs.value.filter(isRunning).map(r => r.id) : [];
  }

  private _emit(what: string): void {
    if (!this._disposed) {
      this._changed.emit(what);
    }
  }

  private _changed = new Signal<this, string>(this);
  private _runEnded = new Signal<this, IRun>(this);
  private _watched = new Set<string>();
  private _pendingRun: string | null = null;
  private _activityStarted = false;
  private _activityLoop = new Loop(
    () => this._doActivity(),
    () => (this._watched.size ? ACTIVITY_BUSY_MS : ACTIVITY_IDLE_MS)
  );
  private _sets = new SetCache(this.client);
  private _disposed = false;
  private _started = false;
  private _startCalled = false;
  private _autoSelected = false;
  private _validate = new Loop(() => this._doValidate(), () => VALIDATE_EVERY_MS);
  private _runsLoop = new Loop(
    () => this._doRuns(),
    () => (this._runningIds().length ? RUNS_BUSY_MS : RUNS_IDLE_MS)
  );
  private _commitsLoop = new Loop(() => this._doCommits(), () => COMMITS_EVERY_MS);
}
