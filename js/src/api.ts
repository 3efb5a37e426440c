/**
 * The REST client of the soopervisor server extension (jupyter_ext/CONTRACT.md).
 *
 * Every request goes through ServerConnection so Jupyter's auth (token header,
 * XSRF cookie) and base URL are applied the same way as for Jupyter's own APIs.
 */
import { PageConfig, URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

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
  /** the troubleshooting entry that explains why the run did not succeed */
  docs?: string | null;
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

let _settings: ServerConnection.ISettings | null = null;
export function settings(): ServerConnection.ISettings {
  return (_settings ??= ServerConnection.makeSettings());
}

/** `endpoint` is relative to /soopervisor/api; its parts must be encoded already. */
export async function request<T>(endpoint: string, init: RequestInit = {}): Promise<T> {
  const s = settings();
  const url = URLExt.join(s.baseUrl, API_ROOT, endpoint);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, s);
  } catch (e) {
    throw new ApiError(
      `cannot reach the Jupyter server: ${(e as Error).message}`,
      0,
      'check that the server is still running'
    );
  }
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
  return data as T;
}

export function post<T>(endpoint: string, body: unknown): Promise<T> {
  return request<T>(endpoint, { method: 'POST', body: JSON.stringify(body) });
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

/** A link the browser can follow for a download (jupyter_server accepts its
 *  login cookie on GET, so no header is needed). */
export function downloadUrl(endpoint: string): string {
  return URLExt.join(settings().baseUrl, API_ROOT, endpoint);
}

/** The websocket URL of a run's log, resuming at line `from`. Browsers cannot
 *  set headers on a websocket, so the token travels as a query parameter. */
export function logSocketUrl(runId: string, from: number): string {
  const s = settings();
  const base = URLExt.join(s.wsUrl, API_ROOT, 'runs', enc(runId), 'log');
  const token = PageConfig.getToken();
  return `${base}?from=${from}` + (token ? `&token=${encodeURIComponent(token)}` : '');
}
