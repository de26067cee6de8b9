/**
 * The start page (`#/`): open a room by id, and sign in; plus the sign-in page
 * (`#/signin`) that guests are sent to when they try to comment, like or buy.
 */

import { field, h, replace, say } from './dom.js';
import { decodeToken } from './session.js';

/** The paste-your-token form; a token that decodes is handed to ctx.signInWith. */
export function signInForm(ctx) {
  const input = h('textarea', {
    id: 'token-input',
    rows: 3,
    required: true,
    spellcheck: false,
    autocomplete: 'off',
    placeholder: 'eyJhbGciOi…',
  });
  const message = h('p', { id: 'token-error', class: 'inline-message', role: 'alert', hidden: true });
  const form = h(
    'form',
    {
      id: 'sign-in-form',
      class: 'stack',
      on: {
        submit: (event) => {
          event.preventDefault();
          const token = input.value.trim();
          if (!decodeToken(token)) {
            say(message, 'That is not an access token. It has three parts separated by dots.');
            return;
          }
          ctx.signInWith(token);
        },
      },
    },
    field('Access token', input, 'The operator creates one with: livemart token --user ID --name NAME'),
    h('button', { id: 'token-save', type: 'submit', text: 'Sign in' }),
    message,
  );
  return form;
}

export function mountHome(ctx, view) {
  document.title = 'livemart';
  const roomInput = h('input', { id: 'room-id-input', type: 'text', required: true, autocomplete: 'off', inputMode: 'text' });
  const watch = h(
    'form',
    {
      id: 'watch-form',
      class: 'stack',
      on: {
        submit: (event) => {
          event.preventDefault();
          const id = roomInput.value.trim();
          if (id) ctx.go(`#/room/${encodeURIComponent(id)}`);
        },
      },
    },
    field('Room id', roomInput),
    h('button', { id: 'watch-button', type: 'submit', text: 'Watch' }),
  );
  const account = ctx.session.token
    ? h(
        'section',
        { class: 'panel narrow' },
        h('h2', { text: 'Signed in' }),
        h('p', {}, 'You are ', h('strong', { text: ctx.session.name }), '.'),
        h('p', { class: 'row wrap' }, h('a', { href: '#/host', text: 'Host console' }), h('a', { href: '#/groups', text: 'My groups' })),
      )
    : h(
        'section',
        { class: 'panel narrow', 'aria-labelledby': 'sign-in-heading' },
        h('h2', { id: 'sign-in-heading', text: 'Sign in to comment, like and buy' }),
        h('p', { text: 'Guests can watch. Paste the access token you were given.' }),
        signInForm(ctx),
      );
  replace(
    view,
    h(
      'div',
      { class: 'home' },
      h(
        'section',
        { class: 'panel narrow', 'aria-labelledby': 'home-heading' },
        h('h1', { id: 'home-heading', text: 'Live shopping' }),
        h('p', { text: 'Enter the id of a live room to watch it.' }),
        watch,
      ),
      account,
    ),
  );
  return () => {};
}

export function mountSignIn(ctx, view) {
  document.title = 'Sign in · livemart';
  replace(
    view,
    h(
      'section',
      { class: 'panel narrow', 'aria-labelledby': 'sign-in-heading' },
      h('h1', { id: 'sign-in-heading', text: 'Sign in' }),
      ctx.session.token ? h('p', {}, 'Signed in as ', h('strong', { text: ctx.session.name }), '. Paste another token to switch.') : null,
      signInForm(ctx),
    ),
  );
  return () => {};
}
