/**
 * Opening an artifact file in JupyterLab: a read-only contents drive.
 *
 * A stored file lives in soopervisor's storage, not in the Jupyter tree, and
 * JupyterLab's viewers (CSV grid, notebook, JSON, images, Markdown) read files
 * through the contents API. This drive answers that API from soopervisor's REST
 * API, so a set's file opens in Lab's own viewer under the path
 * `soopervisor:<project>/<commit>/<run>/<file>`, and nothing is written.
 *
 * Two other ways were tried or weighed: copying the file into the Jupyter tree
 * (jupyter_server refuses to create a hidden folder through the contents API,
 * and a visible copy inside a git repository makes the project dirty: the next
 * run would warn about uncommitted changes), and the server's file route in a
 * new browser tab (a notebook or a CSV shows as raw text or downloads instead:
 * no viewer). A drive has neither problem.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { PathExt } from '@jupyterlab/coreutils';
import { Contents, ServerConnection } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';

import { ApiClient, ApiError, enc, runQuery } from './api';

export const DRIVE_NAME = 'soopervisor';
/** Larger files are downloaded instead: the viewer would hold the whole file in memory. */
export const OPEN_MAX_BYTES = 50 * 1024 * 1024;
/** The run segment of a set of the old layout (no run id). */
const NO_RUN = '-';

interface IFilePath {
  project: string;
  commit: string;
  runId: string | null;
  name: string;
}

/** `<project>/<commit>/<run>/<file...>` to its parts, or null for a folder above a file. */
function parse(localPath: string): IFilePath | null {
  const parts = localPath.split('/').filter(Boolean).map(decodeURIComponent);
  if (parts.length < 4) {
    return null;
  }
  const [project, commit, run, ...rest] = parts;
  return { project, commit, runId: run === NO_RUN ? null : run, name: rest.join('/') };
}

/** The drive path of a file of a set: every segment encoded, so any name parses back. */
export function drivePath(project: string, commit: string, runId: string | null, name: string): string {
  return [project, commit, runId ?? NO_RUN].map(encodeURIComponent).join('/') + '/' + name.split('/').map(encodeURIComponent).join('/');
}

export class ArtifactDrive implements Contents.IDrive {
  readonly name = DRIVE_NAME;

  constructor(
    private _client: ApiClient,
    readonly serverSettings: ServerConnection.ISettings,
    private _mimetype: (name: string) => string,
    /** a set's query (`?run=`, and the sidebar's `&storage=`: the storage of the settings) */
    private _query: (runId: string | null) => string = runQuery
  ) {}

  get fileChanged(): ISignal<this, Contents.IChangedArgs> {
    return this._fileChanged; // a set never changes
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  dispose(): void {
    this._disposed = true;
    Signal.clearData(this);
  }

  async get(localPath: string, options?: Contents.IFetchOptions): Promise<Contents.IModel> {
    const file = parse(localPath);
    const base = {
      path: localPath,
      name: PathExt.basename(localPath),
      writable: false,
      created: new Date(0).toISOString(),
      last_modified: new Date(0).toISOString()
    };
    if (!file) {
      return { ...base, type: 'directory', mimetype: '', content: options?.content === false ? null : [], format: 'json' };
    }
    const type = options?.type ?? (file.name.endsWith('.ipynb') ? 'notebook' : 'file');
    const mimetype = type === 'notebook' ? 'application/x-ipynb+json' : this._mimetype(file.name);
    if (options?.content === false) {
      return { ...base, type, mimetype, content: null, format: null };
    }
    const response = await this._fetch(file);
    const blob = await response.blob();
    if (blob.size > OPEN_MAX_BYTES) {
      throw new ApiError(
        `${file.name} is ${Math.round(blob.size / 1024 / 1024)} MB, too large to open in JupyterLab`,
        413,
        'download it with ⤓ instead'
      );
    }
    const format = options?.format ?? (type === 'notebook' ? 'json' : 'text');
    let content: unknown;
    if (format === 'base64') {
      content = await base64(blob);
    } else {
      const text = await blob.text();
      content = format === 'json' ? JSON.parse(text) : text;
    }
    return { ...base, type, mimetype, content, format, size: blob.size };
  }

  async getDownloadUrl(localPath: string): Promise<string> {
    const file = parse(localPath);
    const link = file ? this._client.link(this._endpoint(file)) : null;
    if (!link) {
      throw new ApiError(`${localPath} cannot be downloaded from here`, 400);
    }
    return link;
  }

  // a stored set is read-only: every change is refused with one sentence
  newUntitled(): Promise<Contents.IModel> {
    return readOnly();
  }
  delete(): Promise<void> {
    return readOnly();
  }
  rename(): Promise<Contents.IModel> {
    return readOnly();
  }
  save(): Promise<Contents.IModel> {
    return readOnly();
  }
  copy(): Promise<Contents.IModel> {
    return readOnly();
  }
  createCheckpoint(): Promise<Contents.ICheckpointModel> {
    return readOnly();
  }
  async listCheckpoints(): Promise<Contents.ICheckpointModel[]> {
    return [];
  }
  restoreCheckpoint(): Promise<void> {
    return readOnly();
  }
  deleteCheckpoint(): Promise<void> {
    return readOnly();
  }

  private _endpoint(f: IFilePath): string {
    return `projects/${enc(f.project)}/commits/${enc(f.commit)}/files/${enc(f.name)}${this._query(f.runId)}`;
  }

  private _fetch(f: IFilePath): Promise<Response> {
    return this._client.fetchOk(this._endpoint(f));
  }


  private _fileChanged = new Signal<this, Contents.IChangedArgs>(this);
  private _disposed = false;
}

/** Opens a set's files in JupyterLab through the drive. */
export class ArtifactOpener {
  constructor(
    private _app: JupyterFrontEnd,
    client: ApiClient,
    query: (runId: string | null) => string = runQuery
  ) {
    const registry = _app.docRegistry;
    const mimetype = (name: string) => registry.getFileTypesForPath(PathExt.basename(name))[0]?.mimeTypes?.[0] ?? 'text/plain';
    _app.serviceManager.contents.addDrive(new ArtifactDrive(client, _app.serviceManager.serverSettings, mimetype, query));
  }

  /** Whether JupyterLab has a viewer for this file name (by its extension). */
  canOpen(name: string): boolean {
    return this._app.docRegistry.getFileTypesForPath(PathExt.basename(name)).length > 0;
  }

  /** Open the file in a JupyterLab tab (read-only). */
  async open(project: string, commit: string, runId: string | null, name: string): Promise<void> {
    const path = `${DRIVE_NAME}:${drivePath(project, commit, runId, name)}`;
    const widget = await this._app.commands.execute('docmanager:open', { path });
    if (!widget) {
      throw new ApiError(`JupyterLab could not open ${name}`, 0, 'download it with ⤓ instead');
    }
  }
}

function readOnly<T>(): Promise<T> {
  return Promise.reject(new ApiError('a stored set of artifacts is read-only', 405, 'download the file to change a copy'));
}

function base64(blob: Blob): Promise<string> {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).replace(/^data:[^,]*,/, ''));
    reader.onerror = () => reject(new ApiError(`cannot read the file: ${reader.error?.message}`, 0));
    reader.readAsDataURL(blob);
  });
}
