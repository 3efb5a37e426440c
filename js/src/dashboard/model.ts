/**
 * The dashboard's state: the server's repositories, its queue, the runs, the
 * selected run's live log and the commits with artifacts of a project. It polls
 * and emits signals; the view renders what it is told (as the sidebar's model).
 */
import { ISignal, Signal } from '@lumino/signaling';

import { ApiClient, ApiError, ICommitDetail, ICommitSummary, IRun, enc, isRunning } from '../api';
import { LogStream } from '../logstream';
import { Load, Loop, SetCache } from '../model';
import {
  IEngine,
  IJob,
  IRepository,
  jobAction,
  listEngines,
  listQueue,
  listRepositories,
  probeAdmin,
  repositoryAction
} from '../serverapi';

const REPOSITORIES_EVERY_MS = 5_000;
const QUEUE_EVERY_MS = 5_000;
const ENGINES_EVERY_MS = 5_000;
const RUNS_BUSY_MS = 2_000;
const RUNS_IDLE_MS = 10_000;
const COMMITS_EVERY_MS = 10_000;

/** What changed: the view redraws that part only. */
export type Change =
  | 'version'
  | 'repositories'
  | 'queue'
  | 'engines'
  | 'runs'
  | 'selection'
  | 'commits'
  | 'action'
  | 'auth';

export class DashboardModel {
  constructor(readonly client: ApiClient) {}

  version: string | null = null;
  repositories: Load<IRepository[]> = { state: 'loading' };
  jobs: Load<IJob[]> = { state: 'loading' };
  /** The engines the queue runs on: busy and free slots, held ones and why. */
  engines: Load<IEngine[]> = { state: 'loading' };
  runs: Load<IRun[]> = { state: 'loading' };
  /** The project whose commits are shown: the selected run's. */
  project: string | null = null;
  commits: Load<ICommitSummary[]> = { state: 'loading' };
  selectedRunId: string | null = null;
  log: LogStream | null = null;
  /** The token may only read (found at the start, or by a 403): the admin buttons go. */
  readOnly = false;
  /** The last failed admin action (pause, poll, cancel, stop…). */
  actionError: ApiError | null = null;
  /** The server refused the token (401): the view asks for another. */
  authError: ApiError | null = null;

  get changed(): ISignal<this, Change> {
    return this._changed;
  }

  get selectedRun(): IRun | null {
    if (this.runs.state !== 'ready' || !this.selectedRunId) {
      return null;
    }
    return this.runs.value.find(r => r.id === this.selectedRunId) ?? null;
  }

  /** Every project that has runs, for the artifacts' project picker. */
  get projects(): string[] {
    return this.runs.state === 'ready' ? [...new Set(this.runs.value.map(r => r.project))].sort() : [];
  }

  start(): void {
    void this.client
      .request<{ version: string }>('version')
      .then(({ version }) => {
        this.version = version;
        this._emit('version');
      })
      .catch(e => this._failed(e));
    void probeAdmin(this.client).then(admin => {
      if (admin === false && !this.readOnly) {
        this.readOnly = true;
        this._emit('action');
      }
    });
    for (const loop of this._loops) {
      loop.refresh();
    }
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this._loops.forEach(loop => loop.dispose());
    this.log?.dispose();
    Signal.clearData(this);
  }

  refreshAll(): void {
    this._loops.forEach(loop => loop.refresh());
  }

  selectRun(id: string | null): void {
    if (id === this.selectedRunId && (id === null || this.log)) {
      return;
    }
    this.selectedRunId = id;
    this.log?.dispose();
    this.log = id ? new LogStream(this.client, id) : null;
    this.log?.stateChanged.connect(this._onLogState, this);
    const run = this.selectedRun;
    if (run && run.project !== this.project) {
      this.selectProject(run.project);
    }
    this._emit('selection');
  }

  selectProject(project: string | null): void {
    if (project === this.project) {
      return;
    }
    this.project = project;
    this.commits = { state: 'loading' };
    this._emit('commits');
    this._commitsLoop.refresh();
  }

  /** One set's files, fetched once (a stored set never changes): the sidebar's cache (model.ts). */
  commitDetail(commit: string, runId: string | null, project: string | null = this.project): Promise<ICommitDetail> {
    if (!project) {
      return Promise.reject(new ApiError('no project', 0));
    }
    return this._sets.get(project, commit, runId);
  }

  repositoryAction(name: string, action: 'pause' | 'resume' | 'poll'): Promise<void> {
    return this._admin(() => repositoryAction(this.client, name, action), this._reposLoop);
  }

  jobAction(id: string, action: 'cancel' | 'retry'): Promise<void> {
    return this._admin(() => jobAction(this.client, id, action), this._queueLoop);
  }

  stopRun(id: string): Promise<void> {
    return this._admin(async () => this._upsertRun(await this.client.post<IRun>(`runs/${enc(id)}/stop`, {})), this._runsLoop);
  }

  private async _admin(fn: () => Promise<unknown>, loop: Loop): Promise<void> {
    this.actionError = null;
    this._emit('action');
    try {
      await fn();
    } catch (e) {
      const err = e as ApiError;
      if (err.status === 403) {
        this.readOnly = true;
      }
      this.actionError = err;
      this._failed(err);
      this._emit('action');
    }
    loop.refresh();
    this._queueLoop.refresh();
  }

  private async _load<T>(fn: () => Promise<T>, set: (next: Load<T>) => void): Promise<void> {
    try {
      set({ state: 'ready', value: await fn() });
    } catch (e) {
      this._failed(e);
      set({ state: 'error', error: e as ApiError });
    }
  }

  private _doRepositories = () =>
    this._load(
      () => listRepositories(this.client),
      next => this._set('repositories', next)
    );

  private _doQueue = () =>
    this._load(
      () => listQueue(this.client, { limit: 50 }),
      next => this._set('jobs', next, 'queue')
    );

  private _doEngines = () =>
    this._load(
      () => listEngines(this.client),
      next => this._set('engines', next)
    );

  private _doRuns = () =>
    this._load(
      () => this.client.request<{ runs: IRun[] }>('runs?limit=100').then(a => a.runs),
      next => {
        const wasRunning = this._runningIds();
        this._set('runs', next);
        if (wasRunning.some(id => !this._runningIds().includes(id))) {
          // a run just finished: its artifacts are new, its job and repository have moved on
          this._commitsLoop.refresh();
          this._queueLoop.refresh();
          this._reposLoop.refresh();
          this._enginesLoop.refresh();
        }
        if (this.project === null && next.state === 'ready' && next.value.length) {
          this.selectProject(next.value[0].project);
        }
      }
    );

  private _doCommits = async () => {
    const project = this.project;
    if (!project) {
      this._set('commits', { state: 'ready', value: [] });
      return;
    }
    let next: Load<ICommitSummary[]>;
    try {
      const { commits } = await this.client.request<{ commits: ICommitSummary[] }>(`projects/${enc(project)}/commits`);
      next = { state: 'ready', value: commits };
    } catch (e) {
      const error = e as ApiError;
      this._failed(error);
      // a project that never stored anything is not an error
      next = error.status === 404 ? { state: 'ready', value: [] } : { state: 'error', error };
    }
    if (project === this.project) {
      this._set('commits', next);
    }
  };

  /** Set a part and emit it when it changed: identical polls touch no DOM. */
  private _set<K extends 'repositories' | 'jobs' | 'engines' | 'runs' | 'commits'>(key: K, next: this[K], change?: Change): void {
    if (JSON.stringify(next) !== JSON.stringify(this[key])) {
      this[key] = next;
      this._emit(change ?? (key as Change));
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
    this._set('runs', { state: 'ready', value: runs });
  }

  private _onLogState(log: LogStream): void {
    if (log.state === 'ended' && log.endRun) {
      this._upsertRun(log.endRun);
      this._runsLoop.refresh();
      this._commitsLoop.refresh();
      this._queueLoop.refresh();
      this._reposLoop.refresh();
    }
  }

  /** A 401 anywhere means the token is gone (revoked, or the server's database changed). */
  private _failed(e: unknown): void {
    const err = e as ApiError;
    if (err?.status === 401 && !this.authError) {
      this.authError = err;
      this._emit('auth');
    }
  }

  private _runningIds(): string[] {
    return this.runs.state === 'ready' ? this.runs.value.filter(isRunning).map(r => r.id) : [];
  }

  private _emit(what: Change): void {
    if (!this._disposed) {
      this._changed.emit(what);
    }
  }

  private _changed = new Signal<this, Change>(this);
  private _sets = new SetCache(this.client);
  private _disposed = false;
  private _reposLoop = new Loop(this._doRepositories, () => REPOSITORIES_EVERY_MS);
  private _queueLoop = new Loop(this._doQueue, () => QUEUE_EVERY_MS);
  private _runsLoop = new Loop(this._doRuns, () => (this._runningIds().length ? RUNS_BUSY_MS : RUNS_IDLE_MS));
  private _commitsLoop = new Loop(this._doCommits, () => COMMITS_EVERY_MS);
  private _enginesLoop = new Loop(this._doEngines, () => ENGINES_EVERY_MS);
  private _loops = [this._reposLoop, this._queueLoop, this._enginesLoop, this._runsLoop, this._commitsLoop];
}
