package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"upgradectl/host"
)

// The shell completions ask the binary itself for the words that fit
// (urfave/cli's --generate-bash-completion), so they know every command
// and flag of the version installed.
const bashCompletion = `# bash completion for upgradectl
_upgradectl() {
	local cur words
	cur="${COMP_WORDS[COMP_CWORD]}"
	words=("${COMP_WORDS[@]:1:COMP_CWORD-1}")
	if [[ "$cur" == -* ]]; then
		words+=("$cur")
	fi
	COMPREPLY=($(compgen -W "$("${COMP_WORDS[0]}" "${words[@]}" --generate-bash-completion 2>/dev/null)" -- "$cur"))
}
complete -o default -F _upgradectl upgradectl
`

const zshCompletion = `#compdef upgradectl
# zsh completion for upgradectl
_upgradectl() {
	local -a opts
	local cur=${words[CURRENT]}
	local -a args=(${words[2,CURRENT-1]})
	[[ $cur == -* ]] && args+=($cur)
	opts=(${(f)"$(${words[1]} ${args[@]} --generate-bash-completion 2>/dev/null)"})
	_describe 'upgradectl' opts
}
compdef _upgradectl upgradectl
`

func init() {
	register(&cli.Command{
		Name:      "completion",
		Usage:     "print the shell completion script for bash, zsh or fish",
		ArgsUsage: "SHELL",
		Description: "bash: upgradectl completion bash > /etc/bash_completion.d/upgradectl\n" +
			"zsh:  upgradectl completion zsh > \"${fpath[1]}/_upgradectl\"\n" +
			"fish: upgradectl completion fish > ~/.config/fish/completions/upgradectl.fish",
		Action: func(c *cli.Context) error {
			switch c.Args().First() {
			case "bash":
				fmt.Fprint(c.App.Writer, bashCompletion)
			case "zsh":
				fmt.Fprint(c.App.Writer, zshCompletion)
			case "fish":
				s, err := c.App.ToFishCompletion()
				if err != nil {
					return err
				}
				fmt.Fprint(c.App.Writer, s)
			default:
				return host.Usage("completion: %q is not bash, zsh or fish", c.Args().First())
			}
			return nil
		},
	}, &cli.Command{
		Name:   "manpage",
		Usage:  "print the manual page (section 8), made from the command definitions",
		Hidden: true,
		Action: func(c *cli.Context) error {
			s, err := c.App.ToMan()
			if err != nil {
				return err
			}
			fmt.Fprint(c.App.Writer, s)
			return nil
		},
	})
}
