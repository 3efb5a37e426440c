/**
 * The sidebar's transport: every request goes through ServerConnection so
 * Jupyter's auth (token header, XSRF cookie) and base URL are applied the same
 * way as for Jupyter's own APIs.
 */
import { PageConfig, URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { API_ROOT, ITransport } from './api';

export function jupyterTransport(settings: ServerConnection.ISettings = ServerConnection.makeSettings()): ITransport {
  return {
    serverName: 'the Jupyter server',
    fetch: (endpoint, init) =>
      ServerConnection.makeRequest(URLExt.join(settings.baseUrl, API_ROOT, endpoint), init, settings),
    // jupyter_server accepts its login cookie on GET: a plain link downloads, streamed to disk
    link: endpoint => URLExt.join(settings.baseUrl, API_ROOT, endpoint),
    socket: endpoint => {
      // browsers cannot set headers on a websocket: the token travels as a query parameter
      const url = URLExt.join(settings.wsUrl, API_ROOT, endpoint);
      const token = PageConfig.getToken();
      return { url: token ? `${url}${url.includes('?') ? '&' : '?'}token=${encodeURIComponent(token)}` : url };
    }
  };
}
