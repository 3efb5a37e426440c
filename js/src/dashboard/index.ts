/**
 * The dashboard of `soopervisor serve`, for people outside Jupyter: sign in with
 * an API token once (kept in this tab's sessionStorage), then the repositories,
 * the queue, the runs with their live logs, and the artifacts.
 */
import { ApiClient, ApiError } from '../api';
import { errorBox, h } from '../dom';
import { listRepositories } from '../serverapi';
import { DashboardModel } from './model';
import { bearerTransport } from './transport';
import { DashboardView, signInError } from './view';

const TOKEN_KEY = 'soopervisor.token';

class Dashboard {
  constructor(private _root: HTMLElement) {}

  start(): void {
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) {
      this._open(token);
    } else {
      this._signIn();
    }
  }

  /** The sign-in form; `problem` says why it is shown again. */
  private _signIn(problem: { message: string; hint: string | null } | null = null): void {
    this._view?.dispose();
    this._view = null;
    const input = h('input', {
      id: 'svd-token',
      name: 'token',
      type: 'password',
      autocomplete: 'off',
      spellcheck: 'false',
      required: true,
      'aria-describedby': 'svd-token-help',
      'data-testid': 'svd-token'
    });
    const status = h('div', { class: 'svd-signin-status', 'aria-live': 'polite' });
    const shown = problem ? errorBox(problem.message, problem.hint, 'svd-signin-error') : null;
    const submit = h('button', { type: 'submit', class: 'svd-button svd-primary', 'data-testid': 'svd-signin-submit' }, 'Sign in');
    const form = h(
      'form',
      {
        class: 'svd-signin',
        'data-testid': 'svd-signin',
        'aria-labelledby': 'svd-signin-title',
        onsubmit: (e: SubmitEvent) => {
          e.preventDefault();
          void this._try(input.value.trim(), status, submit);
        }
      },
      h('h1', { id: 'svd-signin-title' }, 'soopervisor'),
      h('label', { for: 'svd-token' }, 'API token'),
      input,
      h(
        'p',
        { id: 'svd-token-help', class: 'sv-muted' },
        'Ask the server’s operator for one, or make one where the server runs: ',
        h('code', {}, 'soopervisor serve --config server.yaml token create'),
        '. It is kept in this browser tab only, until you sign out or close the tab.'
      ),
      submit,
      status
    );
    if (shown) {
      status.append(shown);
    }
    this._root.replaceChildren(form);
    input.focus();
  }

  /** Check the token against the server before keeping it: a wrong one says so, never a blank page. */
  private async _try(token: string, status: HTMLElement, submit: HTMLButtonElement): Promise<void> {
    if (!token) {
      return;
    }
    submit.disabled = true;
    status.replaceChildren(h('div', { class: 'sv-muted' }, 'Checking the token…'));
    try {
      await listRepositories(new ApiClient(bearerTransport(token)));
    } catch (e) {
      const { message, hint } = signInError(e as ApiError);
      status.replaceChildren(errorBox(message, hint, 'svd-signin-error'));
      submit.disabled = false;
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    this._open(token);
  }

  private _open(token: string): void {
    const model = new DashboardModel(new ApiClient(bearerTransport(token)));
    this._view = new DashboardView(model, () => this._signOut());
    model.changed.connect((_, what) => {
      if (what === 'auth' && model.authError) {
        // revoked meanwhile, or another server: ask again, saying why
        sessionStorage.removeItem(TOKEN_KEY);
        this._signIn(signInError(model.authError));
      }
    });
    this._root.replaceChildren(this._view.node);
    model.start();
  }

  private _signOut(): void {
    sessionStorage.removeItem(TOKEN_KEY);
    this._signIn();
  }

  private _view: DashboardView | null = null;
}

function main(): void {
  const root = document.getElementById('soopervisor-dashboard') ?? document.body;
  try {
    new Dashboard(root).start();
  } catch (e) {
    // whatever broke, the page says it rather than staying blank
    root.replaceChildren(errorBox(`The dashboard cannot start: ${(e as Error).message}`, 'reload the page; if it persists, report it'));
    throw e;
  }
}

if (document.readyState === 'loading') {
  document.addEventListener('DOMContentLoaded', main);
} else {
  main();
}
