/**
 * The routes only `soopervisor serve` has (soopervisor/server/openapi.yaml), on
 * top of the shared client: repositories and their poller status, the job queue.
 * The JupyterLab sidebar never calls these.
 */
import { ApiClient, enc } from './api';

export type JobState = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled' | 'interrupted';

/** queue.Job.to_dict() */
export interface IJob {
  id: string;
  repository: string;
  commit: string;
  /** the project's folder in the repository ('.' its root) */
  project: string;
  mode: string;
  branch: string;
  state: JobState;
  attempts: number;
  run_id: string | null;
  error: string | null;
  lease_owner: string | null;
  lease_until: number | null;
  created_at: number;
  updated_at: number;
}

/** A served repository: its polling state (poller.RepoStatus) and its last jobs (GET /repositories). */
export interface IRepository {
  name: string;
  /** without its credentials */
  url: string;
  branches: string[];
  projects: string[];
  /** branch → the commit it was at when last polled */
  heads: Record<string, string>;
  paused: boolean;
  poll_now: boolean;
  /** epoch seconds of the last poll attempt */
  last_poll: number | null;
  last_success: number | null;
  /** the last attempt's error, null when it succeeded */
  last_error: string | null;
  /** consecutive failed polls: the poller backs off after each */
  failures: number;
  backoff: boolean;
  /** epoch seconds of the next poll; null: never polled, due now */
  next_poll: number | null;
  last_seconds: number | null;
  /** a webhook secret is configured */
  webhook: boolean;
  /** its last jobs, newest first: the commits it ran last */
  jobs: IJob[];
}

/** One engine the queue runs on: its slots and whether it takes jobs (GET /engines, pool.EnginePool.status()). */
export interface IEngine {
  name: string;
  type: string;
  /** "docker at tcp://10.0.0.5:2376" */
  where: string;
  slots: number;
  /** slots running a job now */
  busy: number;
  free: number;
  /** it did not answer: its slots take no job until it does */
  held: boolean;
  reason: string | null;
  hint?: string | null;
  held_since?: number | null;
}

export function listEngines(client: ApiClient): Promise<IEngine[]> {
  return client.request<{ engines: IEngine[] }>('engines').then(a => a.engines);
}

export interface IQueueFilter {
  state?: JobState;
  repository?: string;
  limit?: number;
}

export function listRepositories(client: ApiClient): Promise<IRepository[]> {
  return client.request<{ repositories: IRepository[] }>('repositories').then(a => a.repositories);
}

/** Pause, resume or poll now (admin): the repository after the change. */
export function repositoryAction(
  client: ApiClient,
  name: string,
  action: 'pause' | 'resume' | 'poll'
): Promise<IRepository> {
  return client.post<IRepository>(`repositories/${enc(name)}/${action}`, {});
}

export function listQueue(client: ApiClient, filter: IQueueFilter = {}): Promise<IJob[]> {
  const query = Object.entries(filter)
    .filter(([, v]) => v !== undefined && v !== '')
    .map(([k, v]) => `${k}=${encodeURIComponent(String(v))}`)
    .join('&');
  return client.request<{ jobs: IJob[] }>(`queue${query ? '?' + query : ''}`).then(a => a.jobs);
}

/** Cancel or retry a job (admin): the job after the change. 409 when it cannot (the answer's `job`). */
export function jobAction(client: ApiClient, id: string, action: 'cancel' | 'retry'): Promise<IJob> {
  return client.post<{ job: IJob }>(`queue/${enc(id)}/${action}`, {}).then(a => a.job);
}

/** Whether the token may act (admin) or only read (GET /token names its scope); null when the
 *  server does not say (it is unreachable). */
export async function probeAdmin(client: ApiClient): Promise<boolean | null> {
  try {
    const token = await client.request<{ scope: string }>('token');
    return token.scope === 'admin';
  } catch {
    return null;
  }
}
