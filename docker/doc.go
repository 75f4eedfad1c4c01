// Package docker holds the container files: Dockerfile (the pop3proxy
// image), compose.yaml with config.yaml (pop3proxy with clamd and spamd)
// and spamassassin/ (a spamd image). It has no Go code of its own; its test
// builds the image with buildah and runs it. compose.yaml is checked by
// the separate module in composetest/.
package docker
