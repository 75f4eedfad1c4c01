// Package yamlconf decodes pop3proxy's YAML configuration strictly: every
// unknown key is an error, and every problem in a file is reported at once
// with its key path and line (FieldError), so that an administrator fixes
// a configuration in one pass. It also holds the value types the
// configuration and filter plugins share: Duration ("30s") and ByteSize
// ("10MiB").
//
// The program's own configuration and each filter plugin's block (package
// filter) are decoded with DecodeStrict.
package yamlconf
