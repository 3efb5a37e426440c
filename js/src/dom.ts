/** Small DOM and formatting helpers: the panel is plain DOM, no framework. */

type Child = Node | string | null | undefined | false;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | boolean | ((e: any) => void) | undefined> = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === false) {
      continue;
    }
    if (typeof value === 'function') {
      el.addEventListener(key.replace(/^on/, ''), value);
    } else if (key === 'class') {
      el.className = value as string;
    } else {
      el.setAttribute(key, value === true ? '' : value);
    }
  }
  for (const child of children) {
    if (child !== null && child !== undefined && child !== false) {
      el.append(child);
    }
  }
  return el;
}

export function badge(status: string | null): HTMLElement {
  const s = status ?? 'unknown';
  return h('span', { class: `sv-badge sv-badge--${s}`, 'data-testid': 'sv-badge' }, s);
}

export function fmtDuration(seconds: number | null): string {
  if (seconds === null || !isFinite(seconds)) {
    return '';
  }
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) {
    return `${s}s`;
  }
  const m = Math.floor(s / 60);
  if (m < 60) {
    return `${m}m ${String(s % 60).padStart(2, '0')}s`;
  }
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, '0')}m`;
}

/** Seconds from `started` to `finished`, or to now while it runs. */
export function elapsed(started: string | null, finished: string | null): number | null {
  if (!started) {
    return null;
  }
  const end = finished ? Date.parse(finished) : Date.now();
  return (end - Date.parse(started)) / 1000;
}

export function fmtWhen(iso: string | null): string {
  if (!iso) {
    return '';
  }
  const t = Date.parse(iso);
  if (isNaN(t)) {
    return iso;
  }
  const ago = (Date.now() - t) / 1000;
  if (ago < 60) {
    return 'now';
  }
  if (ago < 3600) {
    return `${Math.floor(ago / 60)}m ago`;
  }
  // short enough for a narrow sidebar; the full time is in the tooltip
  const d = new Date(t);
  const pad = (n: number) => String(n).padStart(2, '0');
  if (d.toDateString() === new Date().toDateString()) {
    return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }
  if (d.getFullYear() === new Date().getFullYear()) {
    return d.toLocaleDateString(undefined, { month: 'short', day: 'numeric' });
  }
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

export function fmtSize(n: number): string {
  if (n < 1024) {
    return `${n} B`;
  }
  const units = ['KB', 'MB', 'GB', 'TB'];
  let v = n;
  let i = -1;
  do {
    v /= 1024;
    i++;
  } while (v >= 1024 && i < units.length - 1);
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

/** A link to the documentation's entry about a problem or an error. */
export function docsLink(docs?: string | null): HTMLElement | null {
  return docs
    ? h('a', { class: 'sv-docs', 'data-testid': 'sv-docs', href: docs, target: '_blank', rel: 'noopener' }, 'More about this')
    : null;
}

/** A message with its hint on a second line: what went wrong, and what to do (and where it is explained). */
export function errorBox(
  message: string,
  hint?: string | null,
  testid = 'sv-error',
  docs?: string | null
): HTMLElement {
  return h(
    'div',
    { class: 'sv-error', 'data-testid': testid, role: 'alert' },
    h('div', { class: 'sv-error-message' }, message),
    hint ? h('div', { class: 'sv-hint' }, hint) : null,
    docsLink(docs)
  );
}
