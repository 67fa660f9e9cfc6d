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

async function call<T>(url: string, init: RequestInit): Promise<T> {
  const res = await fetch(url, init);
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
      throw new RelaisError(err.code, String(err.message ?? err.code), res.status);
    }
    throw new RelaisError("http_error", `HTTP ${res.status} from ${url}`, res.status);
  }
  return body as T;
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
