/**
 * The commit view: `soopervisor:open-commit {project, commit, runId?}` opens one
 * commit's stored sets in the main area. Its sets are a list (every run keeps its
 * own; the one the commit resolves to is selected), the chosen set's files a table
 * with a filter, the settings' hidden patterns, and per file: open in Lab (through
 * the read-only drive of opener.ts), as a table (tableview.ts), download; the zip
 * of the set; and "Compare with…" (compareview.ts's command).
 *
 * The file table is built in time-boxed chunks, one per animation frame, as the
 * sidebar's commit list is: a 1,000-file set shows its first rows at once and
 * never blocks the page.
 */
import { Clipboard } from '@jupyterlab/apputils';
import { copyIcon } from '@jupyterlab/ui-components';
import type { ReadonlyJSONObject } from '@lumino/coreutils';
import { Widget } from '@lumino/widgets';

import { ApiError, IArtifactFile, ICommitDetail, ICommitSummary, ISetSummary, enc } from './api';
import { downloadLink, moveFocus } from './commits';
import { badge, errorBox, fmtSize, fmtWhen, h } from './dom';
import { setQuery } from './model';
import { OPEN_TABLE, addViewCommand, isParquet, isTable, registerTableView } from './tableview';
import { IViewContext } from './viewcontext';

export const OPEN_COMMIT = 'soopervisor:open-commit';
/** compareview.ts registers it: without `other`, it asks which commit to compare with. */
const COMPARE = 'soopervisor:compare';
/** Milliseconds of row building per frame: well under a 16 ms frame. */
const FRAME_BUDGET_MS = 8;

export interface ICommitArgs extends ReadonlyJSONObject {
  project: string;
  commit: string;
  runId: string | null;
}

/** GET …/commits/{commit} also names the set's summary. */
interface ISetDetail extends ICommitDetail {
  set?: ISetSummary;
}

let serial = 0;

export class CommitView extends Widget {
  constructor(
    private _ctx: IViewContext,
    public args: ICommitArgs
  ) {
    super();
    this.addClass('sv-view');
    this.addClass('sv-commitview');
    this.node.dataset.testid = 'sv-commit-view';
    this.node.dataset.commit = args.commit;
    this._setTitle(args.commit);
    this.node.append(
      this._header,
      h('section', { class: 'sv-cv-section' }, h('h3', { id: this._id('sets') }, 'Sets'), this._sets),
      h(
        'section',
        { class: 'sv-cv-section sv-cv-files-section' },
        h('h3', { id: this._id('files') }, 'Files'),
        this._toolbar,
        this._problem,
        this._filesBox
      )
    );
    this._sets.setAttribute('aria-labelledby', this._id('sets'));
    this._table.setAttribute('aria-labelledby', this._id('files'));
    this._filter.addEventListener('input', () => this._showFiles());
    this._tbody.addEventListener('keydown', e => this._tableKeys(e));
    _ctx.model.changed.connect(this._onModel, this);
    this._renderHeader(null);
    void this._load();
  }

  dispose(): void {
    cancelAnimationFrame(this._frame);
    this._ctx.model.changed.disconnect(this._onModel, this);
    super.dispose();
  }

  /** The command given again for this commit: show the set it names. */
  showSet(args: ICommitArgs): void {
    if (args.runId && args.runId !== this._runId) {
      this.args = { ...this.args, runId: args.runId };
      void this._selectSet(args.runId);
    }
  }

  /** An element id of this view (its headings label the list and the table). */
  private _id(part: string): string {
    return `sv-cv-${this._serial}-${part}`;
  }

  private _setTitle(commit: string): void {
    const { project } = this.args;
    this.title.label = `commit ${commit.slice(0, 7)}`;
    const storage = this._storage ? `\nstorage: the sidebar's setting` : '';
    this.title.caption = `Commit ${commit} of ${project}${this._runId ? `\nrun ${this._runId}` : ''}${storage}`;
  }

  private _onModel(_: unknown, what: string): void {
    if (what !== 'settings') {
      return;
    }
    if (this._ctx.model.settings.storage !== this._storage) {
      void this._load(); // another storage: other sets
    } else {
      this._rows.clear(); // the hidden patterns may have changed: rows mark hidden files
      this._showFiles();
    }
  }

  /** The set named by the arguments (or the one the commit resolves to), then the commit's other sets. */
  private async _load(): Promise<void> {
    const { project, commit, runId } = this.args;
    const storage = (this._storage = this._ctx.model.settings.storage);
    this.node.dataset.state = 'loading';
    this._allSets = [];
    const sets = this._loadSets(project, commit);
    await this._selectSet(runId);
    const all = await sets;
    if (all && storage === this._storage) {
      this._allSets = all;
      this._renderSets();
    }
  }

  /** The commit's sets, from the sidebar's list when it shows this project, else asked for. */
  private async _loadSets(project: string, commit: string): Promise<ISetSummary[] | null> {
    const m = this._ctx.model;
    let items: ICommitSummary[];
    try {
      if (m.project === project && m.commits.state === 'ready') {
        items = m.commits.value;
      } else {
        ({ commits: items } = await this._ctx.client.request<{ commits: ICommitSummary[] }>(
          `projects/${enc(project)}/commits${setQuery(null, this._storage)}`
        ));
      }
    } catch {
      return null; // the files' request says what is wrong
    }
    const found = items.find(c => c.commit === commit || c.commit.startsWith(commit));
    return found ? found.sets ?? [found] : null;
  }

  /** Show one set's files (`runId` null: the set the commit resolves to). */
  private async _selectSet(runId: string | null): Promise<void> {
    const { project, commit } = this.args;
    const ticket = ++this._ticket;
    this._runId = runId;
    this._renderSets();
    this._tbody.replaceChildren();
    this._table.dataset.rendered = '0';
    this._table.dataset.complete = 'false';
    this._problem.replaceChildren();
    this._filesBox.replaceChildren(h('div', { class: 'sv-muted' }, 'Loading files…'));
    let detail: ISetDetail;
    try {
      detail = await this._ctx.model.commitDetail(commit, runId, project);
    } catch (e) {
      if (ticket === this._ticket) {
        const err = e as ApiError;
        this.node.dataset.state = 'error';
        this._filesBox.replaceChildren(
          errorBox(`Cannot list the files of ${commit.slice(0, 12)}: ${err.message}`, err.hint, 'sv-cv-error', err.docs)
        );
      }
      return;
    }
    if (ticket !== this._ticket) {
      return; // another set was chosen meanwhile
    }
    this._detail = detail;
    this._runId = detail.run_id ?? runId ?? null;
    this.node.dataset.commit = detail.commit;
    this.node.dataset.runId = this._runId ?? '';
    this._setTitle(detail.commit);
    if (!this._allSets.length && detail.set) {
      this._allSets = [detail.set];
    }
    this._renderHeader(detail);
    this._renderSets();
    this._rows.clear();
    this._filesBox.replaceChildren(this._table);
    this._showFiles();
    this.node.dataset.state = 'ready';
  }

  private _renderHeader(detail: ISetDetail | null): void {
    const { project } = this.args;
    const commit = detail?.commit ?? this.args.commit;
    const status = h('span', { class: 'sv-cv-copied', 'aria-live': 'polite' });
    const copy = h(
      'button',
      {
        class: 'sv-icon-button',
        'data-testid': 'sv-cv-copy',
        title: 'Copy the full commit hash',
        'aria-label': 'Copy the full commit hash',
        onclick: () => {
          Clipboard.copyToSystem(commit);
          status.textContent = 'copied';
          window.setTimeout(() => (status.textContent = ''), 2000);
        }
      },
      copyIcon.element({ tag: 'span', className: 'sv-cv-copy-icon' })
    );
    const compare = h(
      'button',
      {
        class: 'jp-mod-styled sv-cv-compare',
        'data-testid': 'sv-cv-compare',
        title: 'Compare this set with another commit of the project',
        onclick: () => {
          if (!this._ctx.app.commands.hasCommand(COMPARE)) {
            this._problem.replaceChildren(errorBox('Comparing commits is not available in this JupyterLab', 'update soopervisor'));
            return;
          }
          void this._ctx.app.commands.execute(COMPARE, { project, commit, runId: this._runId });
        }
      },
      'Compare with…'
    );
    const zip = detail
      ? downloadLink(
          this._ctx.client,
          `projects/${enc(project)}/commits/${enc(detail.commit)}/zip${this._query()}`,
          `${project}-${detail.commit.slice(0, 7)}${this._runId ? '-' + this._runId : ''}.zip`,
          this._problem,
          { class: 'jp-mod-styled sv-cv-zip', 'data-testid': 'sv-cv-zip', title: 'Download the whole set (every file, the manifest and the log)' },
          '⤓ Download all as zip'
        )
      : null;
    this._header.replaceChildren(
      h(
        'div',
        { class: 'sv-cv-title' },
        h('h2', {}, 'Commit ', h('code', { class: 'sv-sha', 'data-testid': 'sv-cv-commit' }, commit)),
        copy,
        status
      ),
      h(
        'div',
        { class: 'sv-muted' },
        `project ${project}`,
        this._storage ? h('span', { title: 'The storage of the soopervisor settings' }, ' · the settings’ storage') : ''
      ),
      h('div', { class: 'sv-cv-actions' }, compare, zip)
    );
  }

  private _renderSets(): void {
    const sets = this._allSets;
    if (!sets.length) {
      this._sets.replaceChildren();
      return;
    }
    const selected = this._runId ?? this._detail?.run_id ?? null;
    // a re-render keeps the keyboard's place in the list
    const focused = this._sets.contains(document.activeElement) ? (document.activeElement as HTMLElement).dataset.runId : undefined;
    this._sets.replaceChildren(
      ...sets.map(s => {
        const isSelected = (s.run_id ?? null) === selected;
        const choose = () => void this._selectSet(s.run_id ?? null);
        return h(
          'li',
          {
            class: `sv-cv-set${isSelected ? ' sv-cv-set--selected' : ''}`,
            role: 'option',
            'aria-selected': String(isSelected),
            tabindex: isSelected ? '0' : '-1',
            'data-testid': 'sv-cv-set',
            'data-run-id': s.run_id ?? '',
            'data-status': s.status ?? '',
            title: `run ${s.run_id ?? '(old layout)'}: ${s.mode ?? ''} ${s.status ?? ''}, finished ${s.finished_at ?? '?'}`,
            onclick: choose,
            onkeydown: (e: KeyboardEvent) => {
              if (e.key === 'Enter' || e.key === ' ') {
                e.preventDefault();
                choose();
              } else {
                moveFocus(e, this._sets, '.sv-cv-set');
              }
            }
          },
          h('code', { class: 'sv-sha' }, s.run_id ?? '(old layout)'),
          h('span', { class: 'sv-cv-mode' }, s.mode ?? ''),
          badge(s.status),
          h('span', { class: 'sv-muted sv-grow', title: s.finished_at ?? '' }, fmtWhen(s.finished_at ?? s.started_at)),
          h('span', { class: 'sv-muted sv-nowrap' }, `${s.files} file${s.files === 1 ? '' : 's'}`),
          h('span', { class: 'sv-muted sv-nowrap' }, fmtSize(s.size))
        );
      })
    );
    if (focused !== undefined) {
      this._sets.querySelector<HTMLElement>(`[data-run-id="${CSS.escape(focused)}"]`)?.focus();
    }
  }

  /** (Re)build the file table for the filter and the hidden patterns, in chunks. */
  private _showFiles(): void {
    const detail = this._detail;
    if (!detail) {
      return;
    }
    const m = this._ctx.model;
    const needle = this._filter.value.trim().toLowerCase();
    const matching = needle ? detail.files.filter(f => f.name.toLowerCase().includes(needle)) : detail.files;
    const hidden = matching.filter(f => m.hiddenFile(f.name));
    this._files = this._showHidden ? matching : matching.filter(f => !m.hiddenFile(f.name));
    this._renderToolbar(detail.files.length, matching.length, hidden.length);
    cancelAnimationFrame(this._frame);
    this._pos = 0;
    this._tbody.replaceChildren();
    this._table.dataset.total = String(this._files.length);
    if (!this._files.length) {
      this._table.dataset.rendered = '0';
      this._table.dataset.complete = 'true';
      this._tbody.append(
        h('div', { role: 'row' }, h('div', { role: 'cell', class: 'sv-empty' }, detail.files.length ? 'No file matches.' : 'This set has no files.'))
      );
      return;
    }
    this._work();
  }

  private _work = (): void => {
    const start = performance.now();
    const files = this._files;
    while (this._pos < files.length) {
      this._tbody.append(this._row(files[this._pos]));
      this._pos++;
      if ((this._pos & 15) === 0 && performance.now() - start > FRAME_BUDGET_MS) {
        break;
      }
    }
    this._table.dataset.rendered = String(this._pos);
    this._table.dataset.complete = String(this._pos >= files.length);
    if (this._pos < files.length) {
      this._frame = requestAnimationFrame(this._work);
    }
  };

  private _renderToolbar(total: number, matching: number, hidden: number): void {
    const shown = this._showHidden ? matching : matching - hidden;
    this._count.textContent =
      shown === total ? `${total} file${total === 1 ? '' : 's'}` : `${shown} of ${total} file${total === 1 ? '' : 's'}`;
    if (!hidden) {
      this._hiddenToggle.hidden = true;
      return;
    }
    this._hiddenToggle.hidden = false;
    this._hiddenToggle.setAttribute('aria-pressed', String(this._showHidden));
    this._hiddenToggle.dataset.hidden = String(hidden);
    this._hiddenToggle.textContent = this._showHidden
      ? `hide ${hidden} hidden`
      : `show ${hidden} hidden`;
  }

  /** One file's row, made once per set and reused as the filter changes. */
  private _row(f: IArtifactFile): HTMLElement {
    const found = this._rows.get(f.name);
    if (found) {
      return found;
    }
    const { project } = this.args;
    const commit = this._detail!.commit;
    const runId = this._runId;
    const hiddenNow = this._ctx.model.hiddenFile(f.name);
    const open = this._openButton(f.name);
    const asTable =
      isTable(f.name) && !isParquet(f.name)
        ? h(
            'button',
            {
              class: 'sv-link sv-cv-astable',
              'data-col': '2',
              'data-testid': 'sv-cv-astable',
              title: `Show ${f.name} as a table, 200 rows a page`,
              'aria-label': `Show ${f.name} as a table`,
              onclick: () => this._openTable(f.name)
            },
            'as table'
          )
        : null;
    const download = downloadLink(
      this._ctx.client,
      `projects/${enc(project)}/commits/${enc(commit)}/files/${enc(f.name)}${setQuery(runId, this._storage)}`,
      f.name.split('/').pop() ?? f.name,
      this._problem,
      { class: 'sv-download', 'data-col': '3', 'data-testid': 'sv-cv-download', title: `Download ${f.name}`, 'aria-label': `Download ${f.name}` },
      '⤓'
    );
    const row = h(
      'div',
      { class: `sv-cv-file${hiddenNow ? ' sv-cv-file--hidden' : ''}`, role: 'row', 'data-testid': 'sv-cv-file', 'data-name': f.name },
      h('div', { role: 'cell', class: 'sv-cv-name' }, open),
      h('div', { role: 'cell', class: 'sv-cv-size sv-nowrap' }, fmtSize(f.size)),
      h('div', { role: 'cell', class: 'sv-cv-sha' }, h('code', { class: 'sv-sha', title: `sha256 ${f.sha256}` }, f.sha256.slice(0, 12))),
      h('div', { role: 'cell', class: 'sv-cv-file-actions sv-nowrap' }, download, asTable)
    );
    this._rows.set(f.name, row);
    return row;
  }

  /** The name: a button opening it (Lab's viewer, or the table view for Parquet), else plain text. */
  private _openButton(name: string): HTMLElement {
    const table = isParquet(name);
    if (!table && !this._canOpen(name)) {
      return h('span', { class: 'sv-file-name', title: `${name}\nno viewer in JupyterLab: download it` }, name);
    }
    return h(
      'button',
      {
        class: 'sv-file-name sv-file-open',
        'data-col': '1',
        'data-testid': 'sv-cv-open',
        title: table ? `Show ${name} as a table` : `Open ${name} in JupyterLab (read-only)`,
        onclick: (e: MouseEvent) => {
          if (table) {
            this._openTable(name);
            return;
          }
          const button = e.currentTarget as HTMLButtonElement;
          button.disabled = true;
          this._problem.replaceChildren();
          this._ctx.opener
            .open(this.args.project, this._detail!.commit, this._runId, name)
            .catch((err: ApiError) => this._problem.replaceChildren(errorBox(`Cannot open ${name}: ${err.message}`, err.hint)))
            .finally(() => (button.disabled = false));
        }
      },
      name
    );
  }

  /** Whether Lab has a viewer, asked once per extension: a 1,000-file set has few kinds. */
  private _canOpen(name: string): boolean {
    const base = name.slice(name.lastIndexOf('/') + 1);
    const ext = base.includes('.') ? base.slice(base.lastIndexOf('.')).toLowerCase() : base;
    let can = this._viewers.get(ext);
    if (can === undefined) {
      can = this._ctx.opener.canOpen(name);
      this._viewers.set(ext, can);
    }
    return can;
  }

  private _openTable(name: string): void {
    const args = { project: this.args.project, commit: this._detail!.commit, runId: this._runId, name };
    void this._ctx.app.commands.execute(OPEN_TABLE, args);
  }

  /** Up and down move between the same column's buttons of the rows (the files as a list). */
  private _tableKeys(e: KeyboardEvent): void {
    if (e.key !== 'ArrowDown' && e.key !== 'ArrowUp') {
      return;
    }
    const target = e.target as HTMLElement;
    const col = target.dataset.col;
    const row = target.closest('.sv-cv-file');
    if (!col || !row) {
      return;
    }
    let next = (e.key === 'ArrowDown' ? row.nextElementSibling : row.previousElementSibling) as HTMLElement | null;
    while (next) {
      const el = next.querySelector<HTMLElement>(`[data-col="${col}"]`) ?? next.querySelector<HTMLElement>('[data-col]');
      if (el) {
        e.preventDefault();
        el.focus();
        return;
      }
      next = (e.key === 'ArrowDown' ? next.nextElementSibling : next.previousElementSibling) as HTMLElement | null;
    }
  }

  private _query(): string {
    return setQuery(this._runId, this._storage);
  }

  private _serial = ++serial;
  private _storage = '';
  private _runId: string | null = null;
  private _detail: ISetDetail | null = null;
  private _allSets: ISetSummary[] = [];
  private _ticket = 0;
  private _files: IArtifactFile[] = [];
  private _rows = new Map<string, HTMLElement>();
  private _pos = 0;
  private _frame = 0;
  private _showHidden = false;
  private _viewers = new Map<string, boolean>();
  private _header = h('header', { class: 'sv-view-header sv-cv-header' });
  private _sets = h('ul', { class: 'sv-cv-sets', role: 'listbox', 'data-testid': 'sv-cv-sets' });
  private _filter = h('input', {
    type: 'search',
    class: 'jp-mod-styled sv-cv-filter',
    placeholder: 'Filter files by name',
    'aria-label': 'Filter files by name',
    'data-testid': 'sv-cv-filter'
  });
  private _count = h('span', { class: 'sv-muted', 'data-testid': 'sv-cv-count', 'aria-live': 'polite' });
  private _hiddenToggle = h(
    'button',
    {
      class: 'sv-link sv-cv-hidden-toggle',
      'data-testid': 'sv-cv-hidden-toggle',
      title: 'Files hidden by the patterns of the soopervisor settings (ploomber’s .metadata files by default)',
      hidden: true,
      onclick: () => {
        this._showHidden = !this._showHidden;
        this._showFiles();
      }
    },
    ''
  );
  private _toolbar = h('div', { class: 'sv-cv-toolbar' }, this._filter, this._count, this._hiddenToggle);
  private _problem = h('div', { class: 'sv-download-error' });
  // a grid of rows rather than a <table>: each row lays out alone, and rows off screen cost no
  // layout or paint (content-visibility in CSS), so 1,000 rows appended in chunks stay cheap
  private _tbody = h('div', { role: 'rowgroup', class: 'sv-cv-rows' });
  private _table = h(
    'div',
    { class: 'sv-cv-table', role: 'table', 'data-testid': 'sv-cv-files' },
    h(
      'div',
      { role: 'rowgroup' },
      h(
        'div',
        { role: 'row', class: 'sv-cv-file sv-cv-head' },
        h('div', { role: 'columnheader' }, 'Name'),
        h('div', { role: 'columnheader', class: 'sv-cv-size' }, 'Size'),
        h('div', { role: 'columnheader' }, 'sha256'),
        h('div', { role: 'columnheader' }, h('span', { class: 'sv-visually-hidden' }, 'Actions'))
      )
    ),
    this._tbody
  );
  private _filesBox = h('div', { class: 'sv-cv-files-box' });
}

/** `soopervisor:open-commit`, the sidebar's "open" on each commit row, and the table view. */
export function registerCommitView(ctx: IViewContext): void {
  addViewCommand<ICommitArgs, CommitView>(ctx, {
    command: OPEN_COMMIT,
    namespace: 'soopervisor-commit',
    label: 'Open the commit view',
    caption: 'Show a commit’s stored sets and their files in the main area',
    parse: a =>
      typeof a.project === 'string' && a.project && typeof a.commit === 'string' && a.commit
        ? { project: a.project, commit: a.commit, runId: typeof a.runId === 'string' && a.runId ? a.runId : null }
        : null,
    key: a => `${a.project}/${a.commit}`,
    create: a => new CommitView(ctx, a),
    update: (w, a) => w.showSet(a)
  });
  registerTableView(ctx);
}
