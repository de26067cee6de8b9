/**
 * WHIP (publish) and WHEP (play) sessions: one SDP offer POSTed as
 * application/sdp, the answer in the 201 body, the session's URL in `Location`,
 * DELETE on that URL to end it. The server does no trickle ICE, so the offer is
 * sent once candidate gathering has finished.
 */

/** WHEP statuses that mean "nothing to play right now" rather than a failure. */
const OFFLINE_STATUSES = new Set([404, 409, 503]);
/** Longest wait for ICE gathering; what has been gathered by then is sent. */
const GATHER_LIMIT_MS = 3000;

export class StreamOffline extends Error {
  constructor(status) {
    super(`stream offline (${status})`);
    this.name = 'StreamOffline';
    this.status = status;
  }
}

export class StreamError extends Error {
  constructor(status, message) {
    super(message);
    this.name = 'StreamError';
    this.status = status;
  }
}

function waitForGathering(pc) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      pc.removeEventListener('icegatheringstatechange', check);
      clearTimeout(timer);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === 'complete') done();
    };
    const timer = setTimeout(done, GATHER_LIMIT_MS);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

/** Offer, POST, answer. Returns the absolute session URL from `Location`. */
async function negotiate(pc, endpoint, token) {
  await pc.setLocalDescription(await pc.createOffer());
  await waitForGathering(pc);
  const headers = { 'Content-Type': 'application/sdp' };
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(endpoint, { method: 'POST', headers, body: pc.localDescription.sdp });
  } catch (error) {
    throw new StreamError(0, `cannot reach the media endpoint: ${error.message}`);
  }
  if (response.status !== 201) {
    throw new StreamError(response.status, `media endpoint answered ${response.status}`);
  }
  const location = response.headers.get('Location');
  const answer = await response.text();
  await pc.setRemoteDescription({ type: 'answer', sdp: answer });
  return location ? new URL(location, endpoint).toString() : null;
}

/** A WHIP or WHEP session that can be ended once. */
class MediaSession {
  constructor(pc, location, token) {
    this.pc = pc;
    this.location = location;
    this.token = token;
  }

  /**
   * End the session on the server and locally. `keepalive` lets the DELETE
   * outlive the page when called from `pagehide`.
   */
  stop({ keepalive = false } = {}) {
    const location = this.location;
    this.location = null;
    this.pc.close();
    if (!location) return;
    const headers = this.token ? { Authorization: `Bearer ${this.token}` } : {};
    fetch(location, { method: 'DELETE', headers, keepalive }).catch(() => {
      // The server drops idle sessions by itself; nothing more to do here.
    });
  }
}

/**
 * Play a room's stream. `onTrack` receives the MediaStream to attach to a video
 * element; `onState` the peer connection's state (`connected`, `failed`, ...).
 * Throws StreamOffline when there is nothing to play.
 */
export async function startPlayback(endpoint, token, { onTrack, onState }) {
  const pc = new RTCPeerConnection();
  pc.addTransceiver('video', { direction: 'recvonly' });
  pc.addTransceiver('audio', { direction: 'recvonly' });
  pc.addEventListener('track', (event) => {
    onTrack(event.streams[0] ?? new MediaStream([event.track]));
  });
  pc.addEventListener('connectionstatechange', () => onState(pc.connectionState));
  try {
    const location = await negotiate(pc, endpoint, token);
    return new MediaSession(pc, location, token);
  } catch (error) {
    pc.close();
    if (error instanceof StreamError && OFFLINE_STATUSES.has(error.status)) {
      throw new StreamOffline(error.status);
    }
    throw error;
  }
}

/** Publish a camera (and microphone) stream to a room. */
export async function startPublishing(endpoint, token, stream, { onState }) {
  const pc = new RTCPeerConnection();
  for (const track of stream.getTracks()) {
    pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
  }
  pc.addEventListener('connectionstatechange', () => onState(pc.connectionState));
  try {
    const location = await negotiate(pc, endpoint, token);
    return new MediaSession(pc, location, token);
  } catch (error) {
    pc.close();
    throw error;
  }
}
