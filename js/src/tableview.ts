/**
 * A CSV or Parquet file of a stored set as a table in the main area, a page of
 * rows at a time from the server's table route (GET …/commits/{commit}/table/{name}):
 * JupyterLab has no Parquet viewer, and its CSV grid reads the whole file into the
 * page, where this reads 200 rows. Also the helper that makes a command open one
 * restorable main-area view per target, which the commit view uses too.
 */
import { MainAreaWidget, WidgetTracker } from '@jupyterlab/apputils';
import type { ReadonlyJSONObject, ReadonlyPartialJSONObject } from '@lumino/coreutils';
import { Widget } from '@lumino/widgets';

import { ApiError, enc } from './api';
import { errorBox, h } from './dom';
import { IViewContext } from './viewcontext';

export const OPEN_TABLE = 'soopervisor:open-table';
/** Rows per page; the server caps a page at 1,000. */
export const PAGE_ROWS = 200;

export interface ITableColumn {
  name: string;
  type: string;
}

/** GET …/commits/{commit}/table/{name}: one page of a table file. */
export interface ITablePage {
  name: string;
  format: 'csv' | 'parquet';
  columns: ITableColumn[];
  rows: unknown[][];
  total_rows: number | null;
  offset: number;
  limit: number;
}

/** Files the table route reads. */
export function isTable(name: string): boolean {
  return /\.(csv|parquet|pq)$/i.test(name);
}

export function isParquet(name: string): boolean {
  return /\.(parquet|pq)$/i.test(name);
}

/** `query` (a set's `?run=…&storage=…`, maybe '') with more parameters after it. */
export function withParams(query: string, params: Record<string, string | number>): string {
  const more = Object.entries(params).map(([k, v]) => `${k}=${encodeURIComponent(String(v))}`);
  if (!more.length) {
    return query;
  }
  return (query ? `${query}&` : '?') + more.join('&');
}

/** A DOM id from any key: readable part plus a hash, so two keys never share one. */
function domId(prefix: string, key: string): string {
  let hash = 2166136261;
  for (let i = 0; i < key.length; i++) {
    hash = Math.imul(hash ^ key.charCodeAt(i), 16777619);
  }
  return `${prefix}-${key.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 60)}-${(hash >>> 0).toString(36)}`;
}

/** A main-area view's content: it knows the arguments that show it again (the restorer keeps them). */
export interface IView<A> extends Widget {
  readonly args: A;
}

export interface IViewSpec<A extends ReadonlyJSONObject, W extends IView<A>> {
  command: string;
  /** the tracker's namespace, the prefix of the widgets' ids */
  namespace: string;
  label: string;
  caption: string;
  /** the arguments from the command's, or null when they do not name a target */
  parse(args: ReadonlyPartialJSONObject): A | null;
  /** what one widget shows: a second command with the same key activates it */
  key(args: A): string;
  create(args: A): W;
  /** an open view given the command again (e.g. another set of the same commit) */
  update?(widget: W, args: A): void;
}

/** Add `spec.command`: one MainAreaWidget per target (a stable id: the command again activates it),
 *  tracked and restored with the layout when a restorer exists. */
export function addViewCommand<A extends ReadonlyJSONObject, W extends IView<A>>(ctx: IViewContext, spec: IViewSpec<A, W>): void {
  const tracker = new WidgetTracker<MainAreaWidget<W>>({ namespace: spec.namespace });
  ctx.app.commands.addCommand(spec.command, {
    label: spec.label,
    caption: spec.caption,
    icon: ctx.icon,
    execute: async raw => {
      const args = spec.parse(raw);
      if (!args) {
        throw new ApiError(`${spec.command}: missing arguments`, 400);
      }
      const id = domId(spec.namespace, spec.key(args));
      const open = tracker.find(w => w.id === id);
      if (open) {
        spec.update?.(open.content, args);
        ctx.app.shell.activateById(id);
        return open;
      }
      const content = spec.create(args);
      const widget = new MainAreaWidget({ content });
      widget.id = id;
      widget.title.icon = ctx.icon;
      widget.title.closable = true;
      // the content names itself (label, caption); the tab follows it
      const follow = () => {
        widget.title.label = content.title.label;
        widget.title.caption = content.title.caption;
      };
      content.title.changed.connect(follow);
      follow();
      await tracker.add(widget);
      ctx.app.shell.add(widget, 'main');
      ctx.app.shell.activateById(id);
      return widget;
    }
  });
  if (ctx.restorer) {
    void ctx.restorer.restore(tracker, {
      command: spec.command,
      args: w => w.content.args,
      name: w => spec.key(w.content.args)
    });
  }
}

export interface ITableArgs extends ReadonlyJSONObject {
  project: string;
  commit: string;
  runId: string | null;
  name: string;
}

/** One table file of one set, paged. */
export class TableView extends Widget {
  constructor(
    private _ctx: IViewContext,
    readonly args: ITableArgs
  ) {
    super();
    this.addClass('sv-view');
    this.addClass('sv-tableview');
    this.node.dataset.testid = 'sv-table-view';
    this.node.dataset.name = args.name;
    const file = args.name.split('/').pop() ?? args.name;
    this.title.label = file;
    this.title.caption = `${args.name}\ncommit ${args.commit} of ${args.project}${args.runId ? `, run ${args.runId}` : ''}`;
    this.node.append(
      h(
        'header',
        { class: 'sv-view-header' },
        h('h2', {}, args.name),
        h('div', { class: 'sv-muted' }, `commit `, h('code', { class: 'sv-sha', title: args.commit }, args.commit.slice(0, 7)), ` of ${args.project}`, args.runId ? `, run ${args.runId}` : '')
      ),
      this._pager,
      this._problem,
      this._body
    );
    void this._load(0);
  }

  /** The page shown (tests and the pager read it). */
  get offset(): number {
    return this._offset;
  }

  private async _load(offset: number): Promise<void> {
    const { project, commit, runId, name } = this.args;
    const query = withParams(this._ctx.model.setQuery(runId), { offset, limit: PAGE_ROWS });
    this.node.dataset.state = 'loading';
    this._buttons(null);
    let page: ITablePage;
    try {
      page = await this._ctx.client.request<ITablePage>(`projects/${enc(project)}/commits/${enc(commit)}/table/${enc(name)}${query}`);
    } catch (e) {
      const err = e as ApiError;
      this.node.dataset.state = 'error';
      this._problem.replaceChildren(errorBox(`Cannot read ${name} as a table: ${err.message}`, err.hint, 'sv-table-error', err.docs));
      this._buttons(this._page);
      return;
    }
    this._problem.replaceChildren();
    this._offset = page.offset;
    this._page = page;
    this._render(page);
    this._buttons(page);
    this.node.dataset.state = 'ready';
  }

  private _render(page: ITablePage): void {
    const head = h(
      'tr',
      {},
      h('th', { scope: 'col', class: 'sv-tv-index' }, '#'),
      ...page.columns.map(c => h('th', { scope: 'col' }, h('div', {}, c.name), h('div', { class: 'sv-tv-type' }, c.type)))
    );
    const rows = page.rows.map((r, i) =>
      h(
        'tr',
        { 'data-testid': 'sv-table-row' },
        h('th', { scope: 'row', class: 'sv-tv-index' }, String(page.offset + i + 1)),
        ...r.map(v => h('td', { class: v === null ? 'sv-tv-null' : typeof v === 'number' ? 'sv-tv-num' : '' }, v === null ? 'null' : String(v)))
      )
    );
    const shape = `${page.format.toUpperCase()}, ${page.total_rows ?? '?'} rows × ${page.columns.length} columns`;
    this._body.replaceChildren(
      h(
        'table',
        { class: 'sv-tv-table', 'data-testid': 'sv-table' },
        h('caption', { class: 'sv-muted' }, shape),
        h('thead', {}, head),
        h('tbody', {}, ...rows)
      )
    );
  }

  private _buttons(page: ITablePage | null): void {
    const total = page?.total_rows ?? null;
    const first = page ? page.offset + 1 : 0;
    const last = page ? page.offset + page.rows.length : 0;
    const hasPrev = !!page && page.offset > 0;
    const hasNext = !!page && (total === null ? page.rows.length === page.limit : last < total);
    const text = !page ? (this.node.dataset.state === 'error' ? '' : 'Loading…') : page.rows.length ? `rows ${first}–${last} of ${total ?? 'more'}` : `no rows (of ${total ?? 0})`;
    const go = (offset: number) => void this._load(Math.max(0, offset));
    this._pager.replaceChildren(
      h(
        'button',
        {
          class: 'jp-mod-styled sv-tv-prev',
          'data-testid': 'sv-table-prev',
          disabled: !hasPrev,
          onclick: () => page && go(page.offset - PAGE_ROWS)
        },
        '‹ Previous'
      ),
      h('span', { class: 'sv-tv-range', 'data-testid': 'sv-table-range', 'aria-live': 'polite' }, text),
      h(
        'button',
        {
          class: 'jp-mod-styled sv-tv-next',
          'data-testid': 'sv-table-next',
          disabled: !hasNext,
          onclick: () => page && go(page.offset + page.rows.length)
        },
        'Next ›'
      )
    );
  }

  private _offset = 0;
  private _page: ITablePage | null = null;
  private _pager = h('div', { class: 'sv-tv-pager', role: 'group', 'aria-label': 'Pages of rows' });
  private _problem = h('div', {});
  private _body = h('div', { class: 'sv-tv-body' });
}

/** `soopervisor:open-table {project, commit, runId, name}`: the commit view's "as table". */
export function registerTableView(ctx: IViewContext): void {
  addViewCommand<ITableArgs, TableView>(ctx, {
    command: OPEN_TABLE,
    namespace: 'soopervisor-table',
    label: 'Open as a table',
    caption: 'Show a CSV or Parquet file of a stored set as a table, 200 rows a page',
    parse: a =>
      typeof a.project === 'string' && typeof a.commit === 'string' && typeof a.name === 'string'
        ? { project: a.project, commit: a.commit, name: a.name, runId: typeof a.runId === 'string' ? a.runId : null }
        : null,
    key: a => `${a.project}/${a.commit}/${a.runId ?? '-'}/${a.name}`,
    create: a => new TableView(ctx, a)
  });
}
