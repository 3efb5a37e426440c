/**
 * The sidebar's settings (js/schema/plugin.json, shown in JupyterLab's Settings
 * Editor) and the file patterns they hide. Nothing here imports JupyterLab: the
 * dashboard's bundle may read the same shape one day.
 */

export type RunMode = 'sample' | 'full';

export interface ISidebarSettings {
  /** Base image of runs started here; '' leaves the server's choice (c.Soopervisor.image). */
  image: string;
  /** Storage URL of runs started here; '' leaves the server's choice (c.Soopervisor.storage). */
  storage: string;
  /** What the notebook button, the `soopervisor:run` command and the accented panel button start. */
  defaultMode: RunMode;
  /** Names of environment variables of the Jupyter server passed to runs as secrets. */
  secrets: string[];
  /** Glob patterns of artifact files the panel does not list (the zip keeps them). */
  hiddenPatterns: string[];
}

export const DEFAULT_SETTINGS: ISidebarSettings = {
  image: '',
  storage: '',
  defaultMode: 'sample',
  secrets: [],
  // ploomber writes `.<product>.metadata` next to each product (older versions `<product>.metadata`)
  hiddenPatterns: ['*.metadata']
};

/** The settings from the registry's composite value: unknown or mistyped keys fall back to the defaults. */
export function readSettings(raw: Record<string, unknown> | null | undefined): ISidebarSettings {
  const r = raw ?? {};
  const str = (v: unknown, d: string) => (typeof v === 'string' ? v.trim() : d);
  const list = (v: unknown, d: string[]) =>
    Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string' && x.trim() !== '').map(x => x.trim()) : d;
  return {
    image: str(r.image, DEFAULT_SETTINGS.image),
    storage: str(r.storage, DEFAULT_SETTINGS.storage),
    defaultMode: r.defaultMode === 'full' ? 'full' : 'sample',
    secrets: list(r.secrets, DEFAULT_SETTINGS.secrets),
    hiddenPatterns: list(r.hiddenPatterns, DEFAULT_SETTINGS.hiddenPatterns)
  };
}

/** A glob as a RegExp: `*` and `?` stay inside one path segment, `**` crosses them. */
export function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === '*' && glob[i + 1] === '*') {
      // `**/` also matches no folder at all
      if (glob[i + 2] === '/') {
        re += '(?:.*/)?';
        i += 2;
      } else {
        re += '.*';
        i += 1;
      }
    } else if (c === '*') {
      re += '[^/]*';
    } else if (c === '?') {
      re += '[^/]';
    } else {
      re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
    }
  }
  return new RegExp(`^${re}$`);
}

/** Whether `name` (a path inside a set, '/'-separated) is hidden: a pattern without '/' is matched
 *  against the file's own name in any folder, as .gitignore does; one with '/' against the whole path. */
export function isHidden(name: string, patterns: string[]): boolean {
  const base = name.slice(name.lastIndexOf('/') + 1);
  return patterns.some(p => globToRegExp(p.replace(/^\//, '')).test(p.includes('/') ? name : base));
}
