import { RelaisError } from "./errors.js";

export interface RestUser {
  id: string;
  tenant_id: string;
  email: string;
  display_name?: string;
  roles: string[];
  disabled?: boolean;
  created_at?: number;
}

/** The `TokenPair` of `POST /api/v1/auth/login` and `/api/v1/auth/refresh`. */
export interface TokenPair {
  access_token: string;
  refresh_token: string;
  token_type: "Bearer";
  /** Seconds. */
  expires_in: number;
  /** Seconds. */
  refresh_expires_in: number;
  user: RestUser;
}

export interface LoginCredentials {
  /** Tenant slug. */
  tenant: string;
  email: string;
  password: string;
}

function endpoint(baseUrl: string, path: string): string {
  return baseUrl.replace(/\/+$/, "") + path;
}

async function call<T>(url: string, init: RequestInit, fetchImpl: typeof fetch = fetch): Promise<T> {
  return (await callRaw(url, init, fetchImpl)).body as T;
}

/** Like `call`, also keeping the body's text (for answers that are not JSON, e.g. CSV). */
async function callRaw(url: string, init: RequestInit, fetchImpl: typeof fetch = fetch): Promise<{ text: string; body: unknown }> {
  const res = await fetchImpl(url, init);
  const text = await res.text();
  let body: unknown;
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      body = undefined;
    }
  }
  if (!res.ok) {
    const err = (body as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
    if (err && typeof err.code === "string") {
      throw new RelaisError(err.code, String(err.message ?? err.code), res.status, err as Record<string, unknown>);
    }
    throw new RelaisError("http_error", `HTTP ${res.status} from ${url}`, res.status);
  }
  return { text, body };
}

/** `POST {baseUrl}/api/v1/auth/login`: signs in and returns the token pair. */
export function login(baseUrl: string, credentials: LoginCredentials): Promise<TokenPair> {
  return call<TokenPair>(endpoint(baseUrl, "/api/v1/auth/login"), {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      tenant: credentials.tenant,
      email: credentials.email,
      password: credentials.password,
    }),
  });
}

/**
 * `POST {baseUrl}/api/v1/auth/refresh`: rotates a refresh token. The presented
 * refresh token is used up: presenting it again revokes the whole session.
 */
export function refresh(baseUrl: string, refreshToken: string): Promise<TokenPair> {
  return call<TokenPair>(endpoint(baseUrl, "/api/v1/auth/refresh"), {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ refresh_token: refreshToken }),
  });
}

/**
 * `POST {baseUrl}/api/v1/auth/logout`: ends this session (or all of the
 * user's sessions with `all: true`). Live sockets of the session close with 4003.
 */
export async function logout(
  baseUrl: string,
  accessToken: string,
  options: { all?: boolean } = {},
): Promise<void> {
  await call<unknown>(endpoint(baseUrl, "/api/v1/auth/logout"), {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${accessToken}` },
    body: JSON.stringify({ all: options.all ?? false }),
  });
}

export interface RestClientOptions {
  /** The hub's base URL, e.g. `http://localhost:8080`. */
  baseUrl: string;
  /**
   * The bearer credential of each call: a user's access token (the inbox and
   * preferences are the signed-in user's own) or an app backend's API key.
   */
  getToken: () => Promise<string> | string;
  /** `fetch` implementation. Default: the global one (browsers, Node ≥ 18). */
  fetch?: typeof fetch;
}

export interface RequestOptions {
  body?: unknown;
  /** Query parameters; `undefined` values are left out. */
  query?: Record<string, string | number | boolean | undefined>;
  headers?: Record<string, string>;
}

/**
 * Calls the hub's REST API (`/api/v1/…`) with a bearer token. Errors are
 * {@link RelaisError}s carrying the body's `code`, the HTTP `status` and the
 * whole error object in `details`.
 */
export class RestClient {
  readonly baseUrl: string;
  private readonly getToken: () => Promise<string> | string;
  private readonly fetchImpl: typeof fetch;

  constructor(options: RestClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.getToken = options.getToken;
    // Bound: some browsers refuse `fetch` called as a method of another object.
    this.fetchImpl = options.fetch ?? ((input, init) => fetch(input, init));
  }

  async request<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    const { url, init } = await this.prepare(method, path, options);
    return call<T>(url, init, this.fetchImpl);
  }

  /** Like `request`, for answers that are not JSON (e.g. a CSV export): resolves with the body's text. */
  async requestText(method: string, path: string, options: RequestOptions = {}): Promise<string> {
    const { url, init } = await this.prepare(method, path, options);
    return (await callRaw(url, init, this.fetchImpl)).text;
  }

  private async prepare(method: string, path: string, options: RequestOptions): Promise<{ url: string; init: RequestInit }> {
    let url = this.baseUrl + "/api/v1" + path;
    if (options.query) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(options.query)) if (v !== undefined) q.set(k, String(v));
      const qs = q.toString();
      if (qs) url += "?" + qs;
    }
    const headers: Record<string, string> = { authorization: `Bearer ${await this.getToken()}`, ...options.headers };
    const init: RequestInit = { method, headers };
    if (options.body !== undefined) {
      headers["content-type"] = "application/json";
      init.body = JSON.stringify(options.body);
    }
    return { url, init };
  }
}
