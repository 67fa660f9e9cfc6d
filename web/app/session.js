// The signed-in session, shared by every tab of this origin.
//
// The token pair lives in localStorage so that it survives a reload and a
// new tab. The refresh token is single-use (presenting it twice revokes the
// whole session), so only one tab may refresh at a time: refreshes run under
// a Web Lock (`navigator.locks`), or, where the browser has none (a page
// served over plain HTTP from another host), under a short lease kept in
// localStorage. Inside the lock a tab reads the stored pair again: when
// another tab refreshed meanwhile, it takes that result instead of
// refreshing. Other tabs learn of new tokens and of a sign-out through the
// `storage` event.
import { login, logout, refresh } from "/vendor/relais.js";

const STORE = "relais.session";
const LEASE = "relais.refresh-lease";
const base = location.origin;
const listeners = new Set();

function read() {
  try {
    const s = JSON.parse(localStorage.getItem(STORE) || "null");
    return s && typeof s.access === "string" && typeof s.refresh === "string" ? s : null;
  } catch {
    return null;
  }
}

function write(s) {
  localStorage.setItem(STORE, JSON.stringify(s));
}

function fromPair(pair, tenant) {
  const now = Date.now();
  return {
    tenant,
    user: pair.user,
    access: pair.access_token,
    accessLife: pair.expires_in * 1000,
    accessExp: now + pair.expires_in * 1000,
    refresh: pair.refresh_token,
    refreshExp: now + pair.refresh_expires_in * 1000,
  };
}

function emit(kind, detail) {
  for (const fn of listeners) fn(kind, detail);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Runs `fn` while no other tab of this origin refreshes. */
async function exclusive(fn) {
  if (navigator.locks?.request) return navigator.locks.request("relais.refresh", fn);
  const me = `${Date.now()}-${Math.random()}`;
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    const held = JSON.parse(localStorage.getItem(LEASE) || "null");
    if (!held || held.until < Date.now()) {
      localStorage.setItem(LEASE, JSON.stringify({ me, until: Date.now() + 10_000 }));
      await sleep(60); // let a tab that wrote at the same moment overwrite us
      if (JSON.parse(localStorage.getItem(LEASE) || "null")?.me === me) {
        try {
          return await fn();
        } finally {
          localStorage.removeItem(LEASE);
        }
      }
    }
    await sleep(100 + Math.random() * 150);
  }
  throw Object.assign(new Error("another tab holds the token refresh"), { code: "refresh_busy" });
}

/** How long before expiry a token counts as stale: more than the SDK's refresh margin (60 s). */
function margin(s) {
  return Math.min(90_000, (s.accessLife || 1_800_000) * 0.6);
}

let inflight = null;

function signedOutError() {
  return Object.assign(new Error("not signed in"), { code: "signed_out", status: 401 });
}

export const session = {
  /** `{tenant, user}` of the signed-in user, or `null`. */
  current() {
    const s = read();
    if (!s) return null;
    if (s.refreshExp && s.refreshExp < Date.now()) {
      localStorage.removeItem(STORE);
      return null;
    }
    return { tenant: s.tenant, user: s.user };
  },

  roles() {
    return read()?.user?.roles ?? [];
  },

  hasRole(...roles) {
    const mine = this.roles();
    return roles.some((r) => mine.includes(r));
  },

  async signIn(tenant, email, password) {
    const pair = await login(base, { tenant, email, password });
    write(fromPair(pair, tenant));
    emit("signed-in");
  },

  /** Ends the session on the hub (best effort), then here and in every tab. */
  async signOut() {
    const s = read();
    localStorage.removeItem(STORE);
    emit("signed-out", { reason: "user" });
    if (s) await logout(base, s.access).catch(() => {});
  },

  /** The session is over (refused refresh token, revoked session): forget it everywhere. */
  expire() {
    if (!read()) return;
    localStorage.removeItem(STORE);
    emit("signed-out", { reason: "expired" });
  },

  /** A valid access token, refreshed (once for all tabs) when about to expire. */
  async token() {
    const s = read();
    if (!s) throw signedOutError();
    if (s.accessExp - Date.now() > margin(s)) return s.access;
    inflight ??= exclusive(async () => {
      const now = read(); // another tab may have refreshed while we waited
      if (!now) throw signedOutError();
      if (now.accessExp - Date.now() > margin(now)) return now.access;
      let pair;
      try {
        pair = await refresh(base, now.refresh);
      } catch (e) {
        if (e.status === 401 || e.status === 403 || e.status === 422) this.expire();
        throw e;
      }
      write(fromPair(pair, now.tenant));
      return pair.access_token;
    }).finally(() => {
      inflight = null;
    });
    return inflight;
  },

  /** `fn(kind)` on `signed-in` / `signed-out` (here or in another tab). */
  onChange(fn) {
    listeners.add(fn);
    return () => listeners.delete(fn);
  },
};

window.addEventListener("storage", (ev) => {
  if (ev.key !== STORE && ev.key !== null) return;
  const before = ev.oldValue ? JSON.parse(ev.oldValue) : null;
  const after = read();
  if (!after && before) emit("signed-out", { reason: "other-tab" });
  else if (after && (!before || before.user?.id !== after.user?.id)) emit("signed-in");
  // Otherwise another tab refreshed the pair: nothing to do, `token()` reads it.
});
