// A single-page app: no server rendering, no prerendering (the Rust server serves index.html).
export const ssr = false;
export const prerender = false;
export const trailingSlash = 'never';
