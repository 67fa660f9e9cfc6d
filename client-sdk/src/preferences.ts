import type { RestClient } from "./rest.js";

export interface CategoryPreferences {
  in_app?: boolean;
  email?: boolean;
  frequency?: "immediate" | "daily" | "weekly";
}

/** A user's notification preferences (docs/notifications.md, section 7). */
export interface NotificationPreferences {
  locale: "en" | "fr" | null;
  timezone: string | null;
  quiet_hours: { start: string; end: string } | null;
  digest_hour: number;
  digest_weekday: "monday" | "tuesday" | "wednesday" | "thursday" | "friday" | "saturday" | "sunday";
  categories: Record<string, CategoryPreferences>;
}

/** The signed-in user's preferences (`/api/v1/me/preferences`, with their access token). */
export class Preferences {
  constructor(private readonly rest: RestClient) {}

  /** The saved document, or the defaults if never saved. */
  get(): Promise<NotificationPreferences> {
    return this.rest.request<NotificationPreferences>("GET", "/me/preferences");
  }

  /** `PUT`: replaces the whole document; fields left out get their defaults. */
  replace(prefs: Partial<NotificationPreferences>): Promise<NotificationPreferences> {
    return this.rest.request<NotificationPreferences>("PUT", "/me/preferences", { body: prefs });
  }

  /**
   * `PATCH`: top-level fields replace the stored ones (`null` clears
   * `locale`, `timezone`, `quiet_hours`); each category given replaces that
   * category's entry, the others are kept.
   */
  update(patch: Partial<NotificationPreferences>): Promise<NotificationPreferences> {
    return this.rest.request<NotificationPreferences>("PATCH", "/me/preferences", { body: patch });
  }
}
