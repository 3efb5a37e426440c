/**
 * The compare view: two stored sets of one project side by side, in the main area.
 *
 * `soopervisor:compare {project, commit, runId?, other?, otherRunId?}` opens it. Without
 * `other` it first offers the project's other sets to pick from. Then: both sets'
 * facts, the counts (added, removed, changed, unchanged) that also filter the file
 * list, and the chosen file's diff beside the list (diffview.ts renders it). The
 * comparison is the server's (…/compare/{other}): by sha256, no file content is read
 * until a file is chosen. A set never changes, so nothing polls.
 */
import { MainAreaWidget, Notification, WidgetTracker } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { ApiError, ICommitSummary, ISetSummary, enc } from './api';
import {
  FileKind,
  FileStatus,
  IFileDiff,
  ISide,
  IJsonDiff,
  INotebookDiff,
  ITableDiff,
  ITextDiff,
  imagePair,
  jsonKeys,
  notebookDiff,
  sidesTable,
  tableDiff,
  textTable
} from './diffview';
import { downloadLink } from './commits';
import { badge, errorBox, fmtSize, fmtWhen, h } from './dom';
import { IViewContext } from './viewcontext';

export const COMPARE_COMMAND = 'soopervisor:compare';
/** H3's command: the commit view of one set (used only when it is registered). */
const OPEN_COMMIT_COMMAND = 'soopervisor:open-commit';

/** What the command is given: A (commit, runId) is the left/base, B (other, otherRunId) the right. */
export interface ICompareArgs {
  project: string;
  commit: string;
  runId: string | null;
  other: string | null;
  otherRunId: string | null;
}

export interface ICompareFile {
  name: string;
  status: FileStatus;
  kind: FileKind;
  a: ISide | null;
  b: ISide | null;
  /** The ploomber task that made the file (B's manifest, else A's); null when unknown. */
  task?: string | null;
  /** Whether it is ploomber's `.<product>.metadata` file: folded under the list unless shown. */
  metadata?: boolean;
}

export interface ICompareSummary {
  project: string;
  a: ISetSummary;
  b: ISetSummary;
  counts: Record<FileStatus, number>;
  files: ICompareFile[];
}

const STATUSES: FileStatus[] = ['changed', 'added', 'removed', 'unchanged'];
const STATUS_SIGNS: Record<FileStatus, string> = { changed: '~', added: '+', removed: '−', unchanged: '=' };

/** `?k=v&…` of the values that are set, each encoded; '' when none is. */
function query(params: Record<string, string | null | undefined>): string {
  const parts = Object.entries(params)
    .filter(([, v]) => v)
    .map(([k, v]) => `${k}=${encodeURIComponent(v as string)}`);
  return parts.length ? `?${parts.join('&')}` : '';
}

const short = (commit: string) => commit.slice(0, 7);

/** One key per comparison (or picker): the command activates the view already open for it. */
export function compareKey(a: ICompareArgs): string {
  return JSON.stringify([a.project, a.commit, a.runId, a.other, a.otherRunId]);
}

function argsOf(raw: Record<string, unknown>): ICompareArgs | null {
  const str = (v: unknown) => (typeof v === 'string' && v !== '' ? v : null);
  const project = str(raw.project);
  const commit = str(raw.commit);
  if (!project || !commit) {
    return null;
  }
  return { project, commit, runId: str(raw.runId), other: str(raw.other), otherRunId: str(raw.otherRunId) };
}

export class CompareView extends Widget {
  constructor(
    private _ctx: IViewContext,
    private _args: ICompareArgs,
    /** Asked to show another comparison (a pick, a swap): the owner decides where. */
    private _retarget: (next: ICompareArgs) => void
  ) {
    super();
    this.addClass('sv-compare');
    this.node.dataset.testid = 'sv-compare';
    this.node.append(this._root);
    // another storage in the settings holds other sets: compare there (Widget.dispose disconnects)
    _ctx.model.changed.connect((_, what) => {
      if (what === 'settings' && this._storage !== this._renderedStorage) {
        this._render();
      }
    }, this);
    this._render();
  }

  get args(): ICompareArgs {
    return this._args;
  }

  get key(): string {
    return compareKey(this._args);
  }

  /** Show `args` in this view (the owner renamed it). */
  setArgs(args: ICompareArgs): void {
    // a swap keeps the file in view
    this._keep = this._selected;
    this._args = args;
    this._render();
  }

  dispose(): void {
    this._revoke();
    super.dispose();
  }

  // -- titles ---------------------------------------------------------------------

  /** `a1b2c3d ↔ e4f5a6b`, and the full shas with runs in the caption. */
  updateTitle(): void {
    const a = this._args;
    const side = (commit: string, run: string | null) => `${commit}${run ? ` (run ${run})` : ''}`;
    this.title.label = `${short(a.commit)} ↔ ${a.other ? short(a.other) : '…'}`;
    this.title.caption = a.other
      ? `Compare ${a.project}: ${side(a.commit, a.runId)} ↔ ${side(a.other, a.otherRunId)}`
      : `Compare ${a.project}: ${side(a.commit, a.runId)} with another commit`;
  }

  // -- requests --------------------------------------------------------------------

  /** `?storage=` of the sidebar's setting: the sets of runs stored there. */
  private get _storage(): string | null {
    return this._ctx.model.settings?.storage || null;
  }

  private _base(commit: string): string {
    return `projects/${enc(this._args.project)}/commits/${enc(commit)}`;
  }

  private _compareEndpoint(tail = ''): string {
    const a = this._args;
    return (
      `${this._base(a.commit)}/compare/${enc(a.other!)}${tail}` +
      query({ run: this._runA, other_run: this._runB, storage: this._storage })
    );
  }

  /** The files route of one side's set, pinned to the run the comparison resolved. */
  private _fileEndpoint(side: 'a' | 'b', name: string): string {
    const commit = side === 'a' ? this._args.commit : this._args.other!;
    const run = side === 'a' ? this._runA : this._runB;
    return `${this._base(commit)}/files/${enc(name)}${query({ run, storage: this._storage })}`;
  }

  // -- rendering -------------------------------------------------------------------

  private _render(): void {
    this._revoke();
    this._seq++;
    this.updateTitle();
    this._runA = this._args.runId;
    this._runB = this._args.otherRunId;
    this._renderedStorage = this._storage;
    if (this._args.other) {
      void this._showComparison();
    } else {
      void this._showPicker();
    }
  }

  private async _showPicker(): Promise<void> {
    const seq = this._seq;
    const a = this._args;
    this._root.replaceChildren(
      h(
        'div',
        { class: 'sv-compare-head' },
        h('h2', {}, 'Compare ', h('code', { class: 'sv-sha', title: a.commit }, short(a.commit)), a.runId ? ` (run ${a.runId})` : '', ' with…')
      ),
      h('div', { class: 'sv-muted sv-compare-loading' }, 'Loading the commits…')
    );
    let commits: ICommitSummary[];
    try {
      const answer = await this._ctx.client.request<{ commits: ICommitSummary[] }>(
        `projects/${enc(a.project)}/commits${query({ storage: this._storage })}`
      );
      commits = answer.commits ?? [];
    } catch (e) {
      if (seq === this._seq) {
        const err = e as ApiError;
        this._root.lastElementChild!.replaceWith(errorBox(`Cannot list the commits of ${a.project}: ${err.message}`, err.hint, 'sv-error', err.docs));
      }
      return;
    }
    if (seq !== this._seq) {
      return;
    }
    // the other commits' sets, and the other sets of A's own commit (two runs of one commit compare too)
    const sameCommit = (c: string) => c === a.commit || c.startsWith(a.commit) || a.commit.startsWith(c);
    const choices: ISetSummary[] = [];
    for (const c of commits) {
      if (!sameCommit(c.commit)) {
        choices.push(c);
        continue;
      }
      const mine = a.runId ?? c.run_id;
      choices.push(...(c.sets ?? []).filter(s => s.run_id !== mine));
    }
    const list = h('div', {
      class: 'sv-compare-picks',
      role: 'listbox',
      'aria-label': `Sets of ${a.project} to compare with`,
      'data-testid': 'sv-compare-picker'
    });
    const pick = (s: ISetSummary) => this._retarget({ ...a, other: s.commit, otherRunId: s.run_id });
    const rows = choices.map((s, i) =>
      h(
        'div',
        {
          class: 'sv-compare-pick',
          role: 'option',
          'aria-selected': 'false',
          tabindex: i === 0 ? '0' : '-1',
          'data-testid': 'sv-compare-pick',
          'data-commit': s.commit,
          'data-run': s.run_id ?? '',
          title: `${s.commit}\n${s.mode ?? ''} run ${s.run_id ?? '(old layout)'}, ${s.status ?? 'unknown status'}, ${s.files} files`,
          onclick: () => pick(s),
          onkeydown: (e: KeyboardEvent) => {
            if (e.key === 'Enter' || e.key === ' ') {
              e.preventDefault();
              pick(s);
            } else {
              moveAmong(e, list, '.sv-compare-pick:not([hidden])');
            }
          }
        },
        h('code', { class: 'sv-sha' }, s.short_commit || short(s.commit)),
        h('span', { class: 'sv-muted sv-compare-pick-when', title: s.finished_at ?? '' }, fmtWhen(s.finished_at ?? s.started_at)),
        h('span', { class: 'sv-compare-pick-mode' }, s.mode ?? ''),
        badge(s.status),
        h('span', { class: 'sv-muted sv-grow' }, [s.run_id ? `run ${s.run_id}` : '', sameCommit(s.commit) ? '(this commit)' : ''].filter(Boolean).join(' ')),
        h('span', { class: 'sv-muted sv-nowrap' }, `${s.files} file${s.files === 1 ? '' : 's'}`)
      )
    );
    list.append(...rows);
    const filter = h('input', {
      class: 'sv-compare-filter jp-mod-styled',
      type: 'search',
      placeholder: 'Filter by commit or run',
      'aria-label': 'Filter the sets by commit or run',
      'data-testid': 'sv-compare-pick-filter',
      oninput: (e: Event) => {
        const text = (e.target as HTMLInputElement).value.trim().toLowerCase();
        let first = true;
        rows.forEach((row, i) => {
          const s = choices[i];
          row.hidden = !!text && !s.commit.toLowerCase().includes(text) && !(s.run_id ?? '').toLowerCase().includes(text);
          // the first row shown takes the list's tab stop
          row.tabIndex = !row.hidden && first ? 0 : -1;
          first &&= row.hidden;
        });
        none.hidden = !first;
      }
    }) as HTMLInputElement;
    const none = h('div', { class: 'sv-empty', 'data-testid': 'sv-compare-pick-none', hidden: true }, 'No set matches.');
    this._root.lastElementChild!.replaceWith(
      choices.length
        ? h('div', { class: 'sv-compare-picker' }, h('p', { class: 'sv-muted' }, 'Newest first. Choose the set to compare with (B).'), filter, list, none)
        : h('div', { class: 'sv-empty', 'data-testid': 'sv-compare-none' }, `${a.project} has no other stored set to compare with.`)
    );
  }

  private async _showComparison(): Promise<void> {
    const seq = this._seq;
    this._root.replaceChildren(h('div', { class: 'sv-muted sv-compare-loading' }, 'Comparing…'));
    let summary: ICompareSummary;
    try {
      summary = await this._ctx.client.request<ICompareSummary>(this._compareEndpoint());
    } catch (e) {
      if (seq === this._seq) {
        const err = e as ApiError;
        this._root.replaceChildren(
          this._header(null),
          errorBox(`Cannot compare: ${err.message}`, err.hint, 'sv-error', err.docs)
        );
      }
      return;
    }
    if (seq !== this._seq) {
      return;
    }
    // every later request asks for these very sets, whatever newer runs are stored meanwhile
    this._runA = summary.a.run_id ?? this._args.runId;
    this._runB = summary.b.run_id ?? this._args.otherRunId;
    this._summary = summary;
    this._shown = new Set<FileStatus>(['changed', 'added', 'removed']);
    this._showMetadata = false;
    this._selected = null;
    this._root.replaceChildren(
      this._header(summary),
      this._countsBar,
      h('div', { class: 'sv-compare-split' }, h('div', { class: 'sv-compare-files' }, this._nameFilter, this._fileList, this._listNote), this._diffPane)
    );
    this._nameFilter.value = '';
    this._renderCounts();
    const keep = this._keep && summary.files.find(f => f.name === this._keep);
    this._keep = null;
    if (keep && !this._shown.has(keep.status)) {
      this._shown.add(keep.status);
      this._renderCounts();
    }
    if (keep && keep.metadata) {
      this._showMetadata = true;
    }
    this._renderFiles(!keep);
    if (keep) {
      this._select(keep.name);
    }
  }

  /** Both sides' facts, the swap button. `summary` null: only what the arguments say. */
  private _header(summary: ICompareSummary | null): HTMLElement {
    const a = this._args;
    const side = (label: 'A' | 'B', commit: string, run: string | null, set: ISetSummary | null) =>
      h(
        'div',
        { class: 'sv-compare-side', 'data-testid': `sv-compare-side-${label.toLowerCase()}` },
        h('span', { class: 'sv-compare-side-label' }, label),
        this._commitLink(commit, set?.run_id ?? run),
        set ? badge(set.status) : null,
        h(
          'span',
          { class: 'sv-muted' },
          [set?.mode, (set?.run_id ?? run) ? `run ${set?.run_id ?? run}` : null, set ? `${set.files} files, ${fmtSize(set.size)}` : null]
            .filter(Boolean)
            .join(' · ')
        ),
        set?.finished_at ? h('span', { class: 'sv-muted', title: set.finished_at }, fmtWhen(set.finished_at)) : null
      );
    return h(
      'div',
      { class: 'sv-compare-head' },
      h('h2', { class: 'sv-cmp-sr' }, `Compare ${a.project}`),
      side('A', a.commit, a.runId, summary?.a ?? null),
      h(
        'button',
        {
          class: 'sv-compare-swap jp-mod-styled',
          'data-testid': 'sv-compare-swap',
          title: 'Swap A and B',
          'aria-label': 'Swap A and B',
          onclick: () =>
            this._retarget({
              project: a.project,
              commit: a.other!,
              runId: this._runB,
              other: a.commit,
              otherRunId: this._runA
            })
        },
        '⇄'
      ),
      side('B', a.other!, a.otherRunId, summary?.b ?? null)
    );
  }

  /** A short sha that opens the commit view when it is there; plain text otherwise. */
  private _commitLink(commit: string, runId: string | null): HTMLElement {
    const sha = h('code', { class: 'sv-sha' }, short(commit));
    if (!this._ctx.app.commands.hasCommand(OPEN_COMMIT_COMMAND)) {
      return h('span', { title: commit }, sha);
    }
    return h(
      'button',
      {
        class: 'sv-link',
        title: `Open the commit view of ${commit}`,
        onclick: () => void this._ctx.app.commands.execute(OPEN_COMMIT_COMMAND, { project: this._args.project, commit, runId })
      },
      sha
    );
  }

  private _renderCounts(): void {
    const counts = this._summary!.counts;
    this._countsBar.replaceChildren(
      ...STATUSES.map(status =>
        h(
          'button',
          {
            class: `sv-compare-count sv-compare-count--${status}`,
            'data-testid': 'sv-compare-count',
            'data-status': status,
            'data-count': String(counts[status] ?? 0),
            'aria-pressed': String(this._shown.has(status)),
            title: `${this._shown.has(status) ? 'Hide' : 'Show'} the ${status} files`,
            onclick: () => this._toggleStatus(status)
          },
          h('span', { class: 'sv-diff-status-sign', 'aria-hidden': 'true' }, STATUS_SIGNS[status]),
          ` ${counts[status] ?? 0} ${status}`
        )
      )
    );
  }

  private _toggleStatus(status: FileStatus): void {
    if (this._shown.has(status)) {
      this._shown.delete(status);
    } else {
      this._shown.add(status);
    }
    this._renderCounts();
    this._renderFiles(false);
  }

  /** The file list under the status and name filters; `selectFirst` chooses its first file. */
  private _renderFiles(selectFirst: boolean): void {
    const summary = this._summary!;
    const text = this._nameFilter.value.trim().toLowerCase();
    const matching = summary.files.filter(f => this._shown.has(f.status) && (!text || f.name.toLowerCase().includes(text)));
    // ploomber's metadata files differ between any two builds (a timestamp): folded unless asked for
    const files = matching.filter(f => this._showMetadata || !f.metadata);
    const metadata = matching.filter(f => f.metadata).length;
    const focusable = files.some(f => f.name === this._selected) ? this._selected : files[0]?.name;
    this._fileList.replaceChildren(
      ...files.map(f =>
        h(
          'div',
          {
            class: `sv-compare-file sv-compare-file--${f.status}`,
            role: 'option',
            'aria-selected': String(f.name === this._selected),
            tabindex: f.name === focusable ? '0' : '-1',
            'data-testid': 'sv-compare-file',
            'data-name': f.name,
            'data-status': f.status,
            title: `${f.name}\n${f.status}, ${f.kind}${f.task ? `, task ${f.task}` : ''}`,
            onclick: () => this._select(f.name),
            onkeydown: (e: KeyboardEvent) => {
              if (e.key === 'Enter' || e.key === ' ') {
                e.preventDefault();
                this._select(f.name);
              } else {
                // the selection follows the focus, as in a file browser
                const next = moveAmong(e, this._fileList, '.sv-compare-file');
                if (next?.dataset.name !== undefined) {
                  this._select(next.dataset.name);
                }
              }
            }
          },
          h('span', { class: 'sv-diff-status-sign', 'aria-hidden': 'true' }, STATUS_SIGNS[f.status]),
          h('span', { class: 'sv-file-name sv-grow' }, f.name),
          h('span', { class: 'sv-cmp-sr' }, `, ${f.status}`),
          f.task ? h('span', { class: 'sv-muted sv-nowrap sv-compare-task', 'data-testid': 'sv-compare-task' }, `task ${f.task}`) : null,
          h('span', { class: 'sv-muted sv-nowrap' }, f.kind)
        )
      )
    );
    const hiddenUnchanged = this._shown.has('unchanged') ? 0 : summary.counts.unchanged ?? 0;
    const empty =
      summary.files.length === (summary.counts.unchanged ?? 0) && !text
        ? 'No differences: every file is unchanged.'
        : metadata && !this._showMetadata && !text
          ? 'The products are the same: only ploomber’s metadata differs.'
          : 'No file matches.';
    this._listNote.replaceChildren(
      !files.length ? h('div', { class: 'sv-empty', 'data-testid': 'sv-compare-no-files' }, empty) : '',
      metadata
        ? h(
            'button',
            {
              class: 'sv-link sv-compare-metadata',
              'data-testid': 'sv-compare-toggle-metadata',
              'aria-pressed': String(this._showMetadata),
              title: 'ploomber’s .<product>.metadata files: the build’s timestamp and the stored source, rewritten by every build',
              onclick: () => {
                this._showMetadata = !this._showMetadata;
                this._renderFiles(false);
              }
            },
            this._showMetadata
              ? `Hide ${metadata} ploomber metadata file${metadata === 1 ? '' : 's'}`
              : `Show ${metadata} ploomber metadata file${metadata === 1 ? '' : 's'}`
          )
        : '',
      hiddenUnchanged
        ? h(
            'button',
            { class: 'sv-link', 'data-testid': 'sv-compare-show-unchanged', onclick: () => this._toggleStatus('unchanged') },
            `Show ${hiddenUnchanged} unchanged file${hiddenUnchanged === 1 ? '' : 's'}`
          )
        : ''
    );
    if (selectFirst) {
      if (files.length) {
        this._select(files[0].name);
      } else {
        this._diffPane.replaceChildren(h('div', { class: 'sv-empty' }, 'Choose a file to see how it differs.'));
      }
    }
  }

  private _select(name: string): void {
    if (name === this._selected) {
      return;
    }
    this._selected = name;
    for (const row of this._fileList.querySelectorAll<HTMLElement>('.sv-compare-file')) {
      const on = row.dataset.name === name;
      row.setAttribute('aria-selected', String(on));
      row.tabIndex = on ? 0 : -1;
    }
    void this._showDiff(name);
  }

  private async _showDiff(name: string): Promise<void> {
    const seq = ++this._diffSeq;
    this._revoke();
    const file = this._summary!.files.find(f => f.name === name);
    this._diffPane.replaceChildren(h('div', { class: 'sv-muted' }, `Comparing ${name}…`));
    let diff: IFileDiff;
    try {
      diff = await this._ctx.client.request<IFileDiff>(this._compareEndpoint(`/files/${enc(name)}`));
    } catch (e) {
      if (seq === this._diffSeq) {
        const err = e as ApiError;
        this._diffPane.replaceChildren(this._diffHead(file ?? null, name), errorBox(`Cannot compare ${name}: ${err.message}`, err.hint, 'sv-error', err.docs));
      }
      return;
    }
    if (seq !== this._diffSeq) {
      return;
    }
    this._diffPane.replaceChildren(this._diffHead(diff, name), this._diffBody(diff));
  }

  /** The file's name, status and kind, and a download of each side. */
  private _diffHead(file: ICompareFile | IFileDiff | null, name: string): HTMLElement {
    const problem = h('div');
    const filename = name.split('/').pop() ?? name;
    const dl = (side: 'a' | 'b', meta: ISide | null | undefined) =>
      meta
        ? downloadLink(this._ctx.client, this._fileEndpoint(side, name), filename, problem, { class: 'sv-download-side', 'data-testid': 'sv-diff-download' }, `⤓ ${side.toUpperCase()} (${fmtSize(meta.size)})`)
        : null;
    return h(
      'div',
      { class: 'sv-diff-head' },
      h(
        'h3',
        { class: 'sv-diff-title', 'data-testid': 'sv-diff-title' },
        file ? h('span', { class: 'sv-diff-status-sign', 'aria-hidden': 'true' }, STATUS_SIGNS[file.status]) : null,
        h('span', { class: 'sv-file-name' }, name)
      ),
      file ? h('span', { class: 'sv-muted' }, `${file.status} · ${file.kind}${file.task ? ` · task ${file.task}` : ''}`) : null,
      h('span', { class: 'sv-grow' }),
      dl('a', file?.a),
      dl('b', file?.b),
      problem
    );
  }

  private _diffBody(file: IFileDiff): HTMLElement {
    const diff = file.diff ?? {};
    let body: HTMLElement;
    if (diff.too_large) {
      body = h(
        'div',
        { class: 'sv-diff-note', 'data-testid': 'sv-diff-too-large' },
        `${file.name} is too large to compare here. Download both sides (above) to compare them with a tool of your own.`
      );
    } else if ((file.kind === 'text' || file.kind === 'json') && Array.isArray(diff.rows)) {
      const text = diff as ITextDiff;
      body = h(
        'div',
        {},
        file.kind === 'json' ? jsonKeys(diff as IJsonDiff) : null,
        textTable(text.rows, `${file.name}, A beside B`),
        text.truncated ? h('div', { class: 'sv-muted sv-diff-note', 'data-testid': 'sv-diff-truncated' }, 'The diff is cut short: download both sides for the rest.') : null
      );
    } else if (file.kind === 'notebook' && Array.isArray(diff.cells)) {
      body = notebookDiff(diff as INotebookDiff);
    } else if (file.kind === 'table' && ('a' in diff || 'b' in diff)) {
      body = tableDiff(diff as ITableDiff);
    } else if (file.kind === 'image') {
      body = imagePair(
        this._ctx.client,
        file,
        { a: file.a ? this._fileEndpoint('a', file.name) : null, b: file.b ? this._fileEndpoint('b', file.name) : null },
        url => this._urls.push(url)
      );
    } else {
      body = sidesTable(file);
    }
    return h('div', { class: 'sv-diff-body', 'data-testid': 'sv-compare-diff', 'data-kind': file.kind, 'data-name': file.name }, body);
  }

  /** Free the images' blob URLs of the file shown before. */
  private _revoke(): void {
    for (const url of this._urls.splice(0)) {
      URL.revokeObjectURL(url);
    }
  }

  private _root = h('div', { class: 'sv-compare-root' });
  private _countsBar = h('div', { class: 'sv-compare-counts', role: 'group', 'aria-label': 'Show files by status', 'data-testid': 'sv-compare-counts' });
  private _fileList = h('div', { class: 'sv-compare-list', role: 'listbox', 'aria-label': 'Files compared', 'data-testid': 'sv-compare-list' });
  private _listNote = h('div', { class: 'sv-compare-list-note' });
  private _diffPane = h('div', { class: 'sv-compare-diff', role: 'region', 'aria-label': 'Differences of the chosen file' });
  private _nameFilter = h('input', {
    class: 'sv-compare-filter jp-mod-styled',
    type: 'search',
    placeholder: 'Filter files',
    'aria-label': 'Filter the files by name',
    'data-testid': 'sv-compare-file-filter',
    oninput: () => this._renderFiles(false)
  }) as HTMLInputElement;
  private _summary: ICompareSummary | null = null;
  private _shown = new Set<FileStatus>();
  /** Whether ploomber's metadata files are listed (folded into one button by default). */
  private _showMetadata = false;
  private _selected: string | null = null;
  /** The file to show again once the next comparison is loaded (after a swap). */
  private _keep: string | null = null;
  private _runA: string | null = null;
  private _runB: string | null = null;
  private _renderedStorage: string | null = null;
  private _seq = 0;
  private _diffSeq = 0;
  private _urls: string[] = [];
}

/** Arrow keys, Home and End move the focus among `container`'s `selector` elements; the one focused. */
function moveAmong(e: KeyboardEvent, container: HTMLElement, selector: string): HTMLElement | null {
  const items = Array.from(container.querySelectorAll<HTMLElement>(selector));
  const i = items.indexOf(e.currentTarget as HTMLElement);
  const next =
    e.key === 'ArrowDown' ? items[i + 1] : e.key === 'ArrowUp' ? items[i - 1] : e.key === 'Home' ? items[0] : e.key === 'End' ? items[items.length - 1] : undefined;
  if (!next) {
    return null;
  }
  e.preventDefault();
  for (const item of items) {
    item.tabIndex = item === next ? 0 : -1;
  }
  next.focus();
  return next;
}

/** The widget id of a comparison: stable per target, safe in a selector. */
function widgetId(args: ICompareArgs): string {
  return 'soopervisor-compare-' + compareKey(args).replace(/[^A-Za-z0-9_-]/g, '_');
}

export function registerCompareView(ctx: IViewContext): void {
  const { app } = ctx;
  const tracker = new WidgetTracker<MainAreaWidget<CompareView>>({ namespace: 'soopervisor-compare' });
  if (ctx.restorer) {
    void ctx.restorer.restore(tracker, {
      command: COMPARE_COMMAND,
      args: w => ({ ...w.content.args }),
      name: w => w.content.key
    });
  }

  const find = (key: string) => tracker.find(w => w.content.key === key && !w.isDisposed);

  /** A pick or a swap: the view already showing `next` is activated, else this one shows it. */
  const retarget = (widget: MainAreaWidget<CompareView>, next: ICompareArgs) => {
    const open = find(compareKey(next));
    if (open && open !== widget) {
      app.shell.activateById(open.id);
      widget.dispose();
      return;
    }
    widget.id = widgetId(next);
    widget.content.setArgs(next);
    void tracker.save(widget);
  };

  const open = (args: ICompareArgs): MainAreaWidget<CompareView> => {
    const found = find(compareKey(args));
    if (found) {
      app.shell.activateById(found.id);
      return found;
    }
    let widget: MainAreaWidget<CompareView> | null = null;
    const content = new CompareView(ctx, args, next => widget && retarget(widget, next));
    widget = new MainAreaWidget({ content });
    widget.id = widgetId(args);
    widget.addClass('sv-compare-widget');
    content.title.icon = ctx.icon;
    content.title.closable = true;
    content.updateTitle();
    void tracker.add(widget);
    app.shell.add(widget, 'main');
    app.shell.activateById(widget.id);
    return widget;
  };

  app.commands.addCommand(COMPARE_COMMAND, {
    label: args => (args.other ? 'soopervisor: Compare two commits' : 'soopervisor: Compare with another commit…'),
    caption: 'Compare the artifacts of two stored sets of a project, file by file',
    icon: ctx.icon,
    execute: raw => {
      const args = argsOf(raw as Record<string, unknown>);
      if (!args) {
        Notification.warning('soopervisor: comparing needs a project and a commit (open it from a commit)', { autoClose: 8_000 });
        return;
      }
      return open(args);
    }
  });
}
