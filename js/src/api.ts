/**
 * The REST client of soopervisor's API (jupyter_ext/CONTRACT.md), shared by the
 * JupyterLab sidebar and the dashboard of `soopervisor serve`.
 *
 * The client knows the routes and the JSON; how a request reaches the server
 * is a transport's business: the sidebar's goes through Jupyter's
 * ServerConnection (jupyter.ts: token header, XSRF, base URL), the dashboard's
 * through fetch() with a bearer token (dashboard/transport.ts). Nothing here
 * imports JupyterLab, so the dashboard's bundle does not carry it.
 */
export const API_ROOT = 'soopervisor/api';

export interface IProblem {
  what: string;
  where: string;
  hint: string;
  severity: 'error' | 'warning';
  code: string;
  /** the troubleshooting entry of this problem */
  docs?: string;
}

export interface IReport {
  ok: boolean;
  path: string;
  project: { name: string; commit: string | null; dirty: boolean; path: string } | null;
  problems: IProblem[];
}

export type RunStatus =
  | 'queued'
  | 'running'
  | 'succeeded'
  | 'failed'
  | 'cancelled'
  | 'interrupted';

export interface IRun {
  id: string;
  project: string;
  project_path: string;
  commit: string;
  short_commit: string;
  dirty: boolean;
  mode: 'sample' | 'full';
  status: RunStatus;
  exit_code: number | null;
  started_at: string | null;
  finished_at: string | null;
  duration: number | null;
  storage_url: string | null;
  image: string | null;
  failed_task: string | null;
  error: string | null;
  /** task progress from the build's task events: the task started last (or that failed) */
  task?: string | null;
  tasks_done?: number | null;
  tasks_total?: number | null;
  /** the failed task's exception line, e.g. "ValueError: bad value" */
  task_error?: string | null;
  /** the troubleshooting entry that explains why the run did not succeed */
  docs?: string | null;
  /** where it ran, in words, e.g. "docker" or "server ci (https://ci:8008)" */
  executor?: string | null;
  /** the configured engine it ran on (executors.yaml), e.g. "local" */
  engine?: string | null;
  /** the remote it ran on, by name (GET /remotes); null: this machine's engine */
  remote?: string | null;
  /** where it ran, in a word: the remote's name, else the engine's ("local") */
  where?: string;
}

/** A place runs may be sent to (`soopervisor remote add`): never a token. */
export interface IRemote {
  name: string;
  kind: 'server' | 'github';
  /** the server's URL, or the GitHub API URL */
  url: string;
}

/** One stored set: every run keeps its own. */
export interface ISetSummary {
  commit: string;
  short_commit: string;
  /** null for a set stored before runs had their own */
  run_id: string | null;
  /** succeeded, failed, cancelled, interrupted; 'damaged' when its manifest cannot be read */
  status: string | null;
  mode: string | null;
  started_at: string | null;
  finished_at: string | null;
  files: number;
  size: number;
  damaged?: string | null;
}

/** One commit: the set it resolves to (its newest succeeded one), else its newest, and all its sets. */
export interface ICommitSummary extends ISetSummary {
  sets?: ISetSummary[];
  resolved?: boolean;
}

export interface IArtifactFile {
  name: string;
  size: number;
  sha256: string;
}

export interface ICommitDetail {
  commit: string;
  run_id?: string | null;
  manifest: Record<string, unknown>;
  files: IArtifactFile[];
}

/** An error answer of the API: its message, and the hint to fix it when there is one. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly hint: string | null = null,
    readonly body: Record<string, any> = {}
  ) {
    super(message);
  }

  /** The troubleshooting entry that explains the error (soopervisor's own errors have one). */
  get docs(): string | null {
    return typeof this.body?.docs === 'string' ? this.body.docs : null;
  }
}

export function isRunning(run: IRun): boolean {
  return run.status === 'queued' || run.status === 'running';
}

/** Where a run ran, in a word: the remote's name, else the engine's ("local"). */
export function runPlace(run: IRun): string {
  return run.where || run.remote || run.engine || 'local';
}

/** How requests reach the server. `endpoint` is relative to <base>/soopervisor/api,
 *  its parts encoded already, a query string included. */
export interface ITransport {
  /** What the client talks to, for "cannot reach …" messages. */
  readonly serverName: string;
  fetch(endpoint: string, init: RequestInit): Promise<Response>;
  /** The websocket URL and subprotocols of an endpoint (browsers cannot set headers on a websocket). */
  socket(endpoint: string): { url: string; protocols?: string[] };
  /** A URL the browser can follow for a download without any header, or null when
   *  the download needs the transport's credentials (see ApiClient.download). */
  link(endpoint: string): string | null;
}

/** The typed client: one per server, over one transport. */
export class ApiClient {
  constructor(readonly transport: ITransport) {}

  async request<T>(endpoint: string, init: RequestInit = {}): Promise<T> {
    let response: Response;
    try {
      response = await this.transport.fetch(endpoint, init);
    } catch (e) {
      throw new ApiError(
        `cannot reach ${this.transport.serverName}: ${(e as Error).message}`,
        0,
        'check that the server is still running'
      );
    }
    return (await readAnswer(response)) as T;
  }

  post<T>(endpoint: string, body: unknown): Promise<T> {
    return this.request<T>(endpoint, { method: 'POST', body: JSON.stringify(body) });
  }

  /** The answer to a GET of `endpoint` when it is ok (a file's bytes, read by the caller);
   *  else an ApiError with the server's message and hint. */
  async fetchOk(endpoint: string): Promise<Response> {
    let response: Response;
    try {
      response = await this.transport.fetch(endpoint, {});
    } catch (e) {
      throw new ApiError(`cannot reach ${this.transport.serverName}: ${(e as Error).message}`, 0);
    }
    if (!response.ok) {
      await readAnswer(response); // throws the server's error
    }
    return response;
  }

  /** A plain link for the download, when the transport allows one. */
  link(endpoint: string): string | null {
    return this.transport.link(endpoint);
  }

  /** Download through the transport (its credentials in a header): the answer is
   *  read into a blob and saved under `filename` through a temporary link. */
  async download(endpoint: string, filename: string): Promise<void> {
    const response = await this.fetchOk(endpoint);
    const url = URL.createObjectURL(await response.blob());
    const a = document.createElement('a');
    a.href = url;
    a.download = filename;
    a.hidden = true;
    document.body.append(a);
    a.click();
    a.remove();
    // the browser has taken the blob by the next task; a minute leaves room for a slow disk
    window.setTimeout(() => URL.revokeObjectURL(url), 60_000);
  }

  /** The websocket of a run's log, resuming at line `from`. */
  logSocket(runId: string, from: number): WebSocket {
    const { url, protocols } = this.transport.socket(`runs/${enc(runId)}/log?from=${from}`);
    return protocols ? new WebSocket(url, protocols) : new WebSocket(url);
  }
}

/** The JSON of an answer; an ApiError carrying the server's message and hint when it is not ok. */
async function readAnswer(response: Response): Promise<unknown> {
  const text = await response.text();
  let data: any = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const message =
      data?.error ?? data?.message ?? `${response.status} ${response.statusText || 'error'}`;
    throw new ApiError(message, response.status, data?.hint ?? null, data ?? {});
  }
  return data;
}

/** A URL path part: names may hold any character, files may hold '/'. */
export function enc(part: string): string {
  return part.split('/').map(encodeSegment).join('/');
}

/** One path segment, percent-encoded. A product name may hold bytes that are not
 *  UTF-8: the server sends them as the surrogates U+DC80 to U+DCFF (Python's
 *  surrogateescape), which go back to the bytes %80 to %FF here (encodeURIComponent
 *  throws on a lone surrogate). */
function encodeSegment(segment: string): string {
  let out = '';
  for (const ch of segment) {
    const code = ch.charCodeAt(0);
    out +=
      ch.length === 1 && code >= 0xdc80 && code <= 0xdcff
        ? '%' + (code - 0xdc00).toString(16).toUpperCase()
        : encodeURIComponent(ch);
  }
  return out;
}

/** `?run=<id>` naming one set; '' for a set of the old layout (its commit names it). */
export function runQuery(runId: string | null | undefined): string {
  return runId ? `?run=${encodeURIComponent(runId)}` : '';
}
