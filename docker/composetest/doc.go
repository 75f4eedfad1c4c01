// Package composetest checks docker/compose.yaml against the Compose
// Specification (with compose-go, the loader docker compose itself uses)
// and against docker/config.yaml, docker/Dockerfile and
// docker/spamassassin/Dockerfile: that the stack is wired as its files
// say. It is a module of its own, so that pop3proxy's module does not
// carry compose-go's dependencies; test.sh runs its tests.
package composetest
