module github.com/pop3proxy/pop3proxy

go 1.26.8

require (
	github.com/emersion/go-message v0.18.2
	github.com/hashicorp/go-multierror v1.1.1
	github.com/knadh/go-pop3 v1.0.2
	github.com/pires/go-proxyproto v0.15.0
	go.uber.org/zap v1.27.0
	go.yaml.in/yaml/v3 v3.0.4
)

require (
	github.com/hashicorp/errwrap v1.0.0 // indirect
	go.uber.org/multierr v1.10.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
)
