/**
 * The dashboard's transport: fetch() with `Authorization: Bearer TOKEN`, and the
 * log websocket with the token in its subprotocols (a browser cannot set a
 * websocket's headers): `soopervisor, soopervisor.bearer.TOKEN`, of which the
 * server selects `soopervisor`.
 */
import { API_ROOT, ITransport } from '../api';

/** The server's base URL (ending in '/'), from where the dashboard is served: <base>dashboard/. */
export function serverBase(location: Location = window.location): string {
  const path = location.pathname;
  const at = path.lastIndexOf('/dashboard/');
  const base = at >= 0 ? path.slice(0, at + 1) : path.endsWith('/dashboard') ? path.slice(0, -'dashboard'.length) : '/';
  return `${location.origin}${base}`;
}

export function bearerTransport(token: string, base: string = serverBase()): ITransport {
  const api = `${base}${API_ROOT}/`;
  const wsApi = api.replace(/^http/, 'ws');
  return {
    serverName: 'the soopervisor server',
    fetch: (endpoint, init) => {
      const headers = new Headers(init.headers);
      headers.set('Authorization', `Bearer ${token}`);
      if (init.body && !headers.has('Content-Type')) {
        headers.set('Content-Type', 'application/json');
      }
      // no cookie is needed nor sent: the header is the only credential
      return fetch(api + endpoint, { ...init, headers, credentials: 'omit', cache: 'no-store' });
    },
    socket: endpoint => ({ url: wsApi + endpoint, protocols: ['soopervisor', `soopervisor.bearer.${token}`] }),
    // a link cannot carry the header: downloads go through ApiClient.download (fetch + blob)
    link: () => null
  };
}
