// wshub-client: the JavaScript client of wshub (browsers and Node >= 20).
export { WshubClient, WshubClient as default } from "./client.js";
export { Subscription } from "./subscription.js";
export { WshubError } from "./errors.js";
export { backoffDelay } from "./policy.js";
