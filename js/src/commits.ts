/**
 * The commits with artifacts: a keyed list that stays fast with 1,000+ rows.
 *
 * - Rows are created in time-boxed chunks, one chunk per animation frame, so a
 *   long list never blocks the main thread (no long task) and the first rows
 *   show at once.
 * - Rows are keyed by commit: a poll that changes nothing touches no DOM (the
 *   model drops identical answers), and one that adds a commit creates one row
 *   and moves none of the others' content. An expanded row keeps its files.
 * - Off-screen rows cost no layout or paint (`content-visibility: auto` in CSS).
 */
import { ApiClient, ApiError, ICommitDetail, ICommitSummary, enc, runQuery } from './api';
import { errorBox, fmtSize, fmtWhen, h } from './dom';

/** Where the list gets a set's files: the sidebar's and the dashboard's models both are one. */
export interface ICommitSource {
  readonly client: ApiClient;
  commitDetail(commit: string, runId: string | null, project?: string): Promise<ICommitDetail>;
  /** Files the lists leave out (the sidebar's hidden patterns); none when absent. */
  hiddenFile?(name: string): boolean;
  /** Whether `openFile` can show a file (JupyterLab has a viewer for it). */
  canOpen?(name: string): boolean;
  /** Open a file of a set in the host application (the sidebar: a JupyterLab tab). */
  openFile?(project: string, commit: string, runId: string | null, name: string): Promise<void>;
  /** The query of a set's file and zip routes (`?run=`, and the sidebar's `&storage=`); `?run=` alone when absent. */
  setQuery?(runId: string | null): string;
  /** Open a commit's sets in the main area (JupyterLab's commit view): each row then has an "open" button. */
  openCommit?(project: string, commit: string, runId: string | null): void;
}

/** Milliseconds of row building per frame: well under a 16 ms frame. */
const FRAME_BUDGET_MS = 8;

interface IRow {
  el: HTMLElement;
  head: HTMLElement;
  /** the "open" button beside the head (only where the host has a commit view) */
  open: HTMLElement | null;
  body: HTMLElement | null;
  sig: string;
  item: ICommitSummary;
}

/** The tooltip of a commit row: the set shown, and how many the commit holds. */
function rowTitle(item: ICommitSummary): string {
  const sets = item.sets?.length ?? 1;
  const what = item.damaged
    ? `damaged: ${item.damaged}`
    : `${item.mode ?? ''} run ${item.run_id ?? '(old layout)'}, ${item.status ?? 'unknown status'}, ${item.files} files`;
  const others = sets > 1 ? `\n${sets} sets stored for this commit` : '';
  const none = item.resolved === false ? '\nno succeeded set: showing the newest' : '';
  return `${item.commit}\n${what}${others}${none}`;
}

export class CommitList {
  /** The list element: `data-rendered` counts built rows, `data-complete` says all are. */
  readonly node = h('div', { class: 'sv-commit-list', 'data-testid': 'sv-commits-list' });

  constructor(private _model: ICommitSource) {}

  /** Show `items` (newest first); the work continues over the next frames. */
  update(items: ICommitSummary[], project: string): void {
    if (project !== this._project) {
      this._project = project;
      this._rows.clear();
      this.node.replaceChildren();
    }
    this._items = items;
    this._pos = 0;
    const keep = new Set(items.map(c => c.commit));
    for (const [commit, row] of this._rows) {
      if (!keep.has(commit)) {
        row.el.remove();
        this._rows.delete(commit);
      }
    }
    this.node.dataset.total = String(items.length);
    this._work();
  }

  dispose(): void {
    cancelAnimationFrame(this._frame);
  }

  /** Rebuild the open rows' file lists (the hidden patterns changed). */
  refresh(): void {
    for (const row of this._rows.values()) {
      if (row.body) {
        this._toggle(row);
        this._toggle(row);
      }
    }
  }

  /** Build or patch rows from `_pos` on, until the frame budget is spent. */
  private _work = (): void => {
    cancelAnimationFrame(this._frame);
    const start = performance.now();
    const items = this._items;
    // `prev` is where row i must follow: rows are placed in order as we go
    let prev: Element | null = this._pos > 0 ? this._rows.get(items[this._pos - 1].commit)!.el : null;
    while (this._pos < items.length) {
      const item = items[this._pos];
      let row = this._rows.get(item.commit);
      const sig =
        `${item.run_id}|${item.status}|${item.mode}|${item.finished_at}|${item.files}|${item.size}|` +
        `${item.sets?.length ?? 1}`;
      if (!row) {
        row = this._makeRow(item, sig);
        this._rows.set(item.commit, row);
      } else if (row.sig !== sig) {
        const otherSet = row.item.run_id !== item.run_id;
        row.head.replaceWith((row.head = this._makeHead(item, row)));
        row.open?.setAttribute('title', `Open commit ${item.commit} in the main area (its sets and files)`);
        row.sig = sig;
        row.item = item;
        if (otherSet && row.body) {
          // the commit now resolves to another set (a newer good run): show that set's files
          this._toggle(row);
          this._toggle(row);
        }
      }
      const want = prev ? prev.nextElementSibling : this.node.firstElementChild;
      if (want !== row.el) {
        this.node.insertBefore(row.el, want);
      }
      prev = row.el;
      this._pos++;
      if ((this._pos & 15) === 0 && performance.now() - start > FRAME_BUDGET_MS) {
        break;
      }
    }
    this.node.dataset.rendered = String(this._pos);
    this.node.dataset.complete = String(this._pos >= items.length);
    if (this._pos < items.length) {
      this._frame = requestAnimationFrame(this._work);
    }
  };

  private _makeRow(item: ICommitSummary, sig: string): IRow {
    const el = h('div', {
      class: 'sv-commit',
      'data-testid': 'sv-commit-row',
      'data-commit': item.commit
    });
    const row: IRow = { el, head: el, open: null, body: null, sig, item };
    row.head = this._makeHead(item, row);
    const openCommit = this._model.openCommit?.bind(this._model);
    if (!openCommit) {
      el.append(row.head);
      return row;
    }
    // beside the head, not inside it: a button inside a role=button is not operable by assistive tech
    row.open = h(
      'button',
      {
        class: 'sv-commit-open sv-icon-button',
        'data-testid': 'sv-commit-open',
        title: `Open commit ${item.commit} in the main area (its sets and files)`,
        'aria-label': `Open commit ${item.short_commit || item.commit.slice(0, 7)}`,
        onclick: () => openCommit(this._project, row.item.commit, row.item.run_id ?? null)
      },
      '⤢'
    );
    el.append(h('div', { class: 'sv-commit-line' }, row.head, row.open));
    return row;
  }

  private _makeHead(item: ICommitSummary, row: IRow): HTMLElement {
    const toggle = () => this._toggle(row);
    return h(
      'div',
      {
        class: 'sv-commit-head',
        role: 'button',
        tabindex: '0',
        'aria-expanded': String(!!row.body),
        'data-testid': 'sv-commit-toggle',
        title: rowTitle(item),
        onclick: toggle,
        onkeydown: (e: KeyboardEvent) => {
          if (e.key === 'Enter' || e.key === ' ') {
            e.preventDefault();
            toggle();
          } else if (e.key === 'ArrowRight' || e.key === 'ArrowLeft') {
            // a tree's keys: right opens, left closes
            e.preventDefault();
            if ((e.key === 'ArrowRight') !== !!row.body) {
              toggle();
            }
          } else {
            moveFocus(e, this.node, '.sv-commit-head');
          }
        }
      },
      h('span', { class: 'sv-caret' }),
      h('code', { class: 'sv-sha' }, item.short_commit || item.commit.slice(0, 7)),
      h('span', { class: `sv-dot sv-dot--${item.status ?? 'unknown'}`, title: item.status ?? '' }),
      h('span', { class: 'sv-commit-mode' }, item.mode ?? ''),
      h(
        'span',
        // data-when: the panel's ticker keeps "5m ago" true
        { class: 'sv-muted sv-grow', title: item.finished_at ?? '', 'data-when': item.finished_at ?? item.started_at ?? undefined },
        fmtWhen(item.finished_at ?? item.started_at)
      ),
      h(
        'span',
        { class: 'sv-muted sv-nowrap', title: `${item.files} file${item.files === 1 ? '' : 's'}` },
        fmtSize(item.size)
      )
    );
  }

  private _toggle(row: IRow): void {
    if (row.body) {
      row.body.remove();
      row.body = null;
      row.el.classList.remove('sv-commit--open');
      row.head.setAttribute('aria-expanded', 'false');
      return;
    }
    row.el.classList.add('sv-commit--open');
    row.head.setAttribute('aria-expanded', 'true');
    const body = (row.body = h(
      'div',
      { class: 'sv-commit-body', 'data-testid': 'sv-commit-files' },
      h('div', { class: 'sv-muted' }, 'Loading files…')
    ));
    row.el.append(body);
    const project = this._project;
    const { commit, run_id: runId } = row.item;
    if (row.item.damaged) {
      body.replaceChildren(errorBox(`This set is damaged: ${row.item.damaged}`, null));
      return;
    }
    void showSetFiles(this._model, body, project, commit, runId ?? null, () => row.body === body);
  }

  private _project = '';
  private _items: ICommitSummary[] = [];
  private _pos = 0;
  private _frame = 0;
  private _rows = new Map<string, IRow>();
}

/** Fill `body` with one set's files and their downloads (and the zip); `current()` says whether
 *  `body` still wants them (a row collapsed meanwhile does not). */
export async function showSetFiles(
  source: ICommitSource,
  body: HTMLElement,
  project: string,
  commit: string,
  runId: string | null,
  current: () => boolean = () => true
): Promise<void> {
  let detail: ICommitDetail;
  try {
    detail = await source.commitDetail(commit, runId, project);
  } catch (e) {
    const err = e as ApiError;
    if (current()) {
      body.replaceChildren(errorBox(`Cannot list the files: ${err.message}`, err.hint, 'sv-error', err.docs));
    }
    return;
  }
  if (!current()) {
    return;
  }
  const base = `projects/${enc(project)}/commits/${enc(detail.commit)}`;
  // ?run=: this very set, whatever newer sets the commit gets meanwhile (and &storage=: where it is)
  const query = source.setQuery ? source.setQuery(runId) : runQuery(runId);
  const problem = h('div', { class: 'sv-download-error' });
  const shown = detail.files.filter(f => !source.hiddenFile?.(f.name));
  const hidden = detail.files.length - shown.length;
  const files = shown.map(f =>
    h(
      'li',
      { class: 'sv-file', 'data-testid': 'sv-commit-file', 'data-name': f.name },
      fileName(source, project, detail.commit, runId, f.name, f.sha256, problem),
      h('span', { class: 'sv-muted' }, fmtSize(f.size)),
      downloadLink(source.client, `${base}/files/${enc(f.name)}${query}`, f.name.split('/').pop() ?? f.name, problem, {
        class: 'sv-download',
        title: `Download ${f.name}`,
        'aria-label': `Download ${f.name}`,
        'data-testid': 'sv-file-download'
      }, '⤓')
    )
  );
  body.replaceChildren(
    files.length ? h('ul', { class: 'sv-files' }, ...files) : h('div', { class: 'sv-muted' }, 'No files.'),
    hidden
      ? h(
          'div',
          { class: 'sv-muted sv-hidden-note', 'data-testid': 'sv-hidden-files', title: 'Hidden artifact files: a setting of the soopervisor sidebar' },
          `${hidden} hidden file${hidden === 1 ? '' : 's'} (settings); the zip has them`
        )
      : '',
    downloadLink(
      source.client,
      `${base}/zip${query}`,
      `${project}-${detail.commit.slice(0, 7)}${runId ? '-' + runId : ''}.zip`,
      problem,
      { class: 'sv-zip jp-mod-styled', 'data-testid': 'sv-commit-zip' },
      '⤓ Download all as zip'
    ),
    problem
  );
}

/** A file's name: a button opening it in the host application when it has a viewer for it. */
function fileName(
  source: ICommitSource,
  project: string,
  commit: string,
  runId: string | null,
  name: string,
  sha256: string,
  problem: HTMLElement
): HTMLElement {
  const title = `${name}\nsha256 ${sha256}`;
  if (!source.openFile || !source.canOpen?.(name)) {
    return h('span', { class: 'sv-file-name sv-grow', title }, name);
  }
  const open = source.openFile.bind(source);
  return h(
    'button',
    {
      class: 'sv-file-name sv-file-open sv-grow',
      'data-testid': 'sv-file-open',
      title: `Open in JupyterLab: ${title}`,
      onclick: (e: MouseEvent) => {
        const button = e.currentTarget as HTMLButtonElement;
        button.disabled = true;
        problem.replaceChildren();
        open(project, commit, runId, name)
          .catch((err: ApiError) => problem.replaceChildren(errorBox(`Cannot open ${name}: ${err.message}`, err.hint)))
          .finally(() => (button.disabled = false));
      }
    },
    name
  );
}

/** Arrow keys, Home and End move the focus among `container`'s `selector` elements. */
export function moveFocus(e: KeyboardEvent, container: HTMLElement, selector: string): void {
  const items = Array.from(container.querySelectorAll<HTMLElement>(selector));
  const i = items.indexOf(e.currentTarget as HTMLElement);
  const next =
    e.key === 'ArrowDown' ? items[i + 1] : e.key === 'ArrowUp' ? items[i - 1] : e.key === 'Home' ? items[0] : e.key === 'End' ? items[items.length - 1] : undefined;
  if (next) {
    e.preventDefault();
    next.focus();
  }
}

/** A download link. Where the transport allows a plain link (the sidebar: jupyter_server accepts
 *  its login cookie on GET) the browser streams the file to disk; otherwise (a bearer token) a
 *  click fetches it with the header and saves the blob, and a failure shows in `problem`. */
export function downloadLink(
  client: ApiClient,
  endpoint: string,
  filename: string,
  problem: HTMLElement,
  attrs: Record<string, string>,
  label: string
): HTMLElement {
  const href = client.link(endpoint);
  if (href !== null) {
    return h('a', { ...attrs, href, download: filename }, label);
  }
  return h(
    'a',
    {
      ...attrs,
      href: '#',
      role: 'button',
      onclick: (e: MouseEvent) => {
        e.preventDefault();
        problem.replaceChildren();
        client.download(endpoint, filename).catch((err: ApiError) => {
          problem.replaceChildren(errorBox(`Cannot download ${filename}: ${err.message}`, err.hint));
        });
      }
    },
    label
  );
}
