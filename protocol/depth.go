package protocol

// DeeperThan reports whether the valid JSON value v nests objects and
// arrays more than max levels deep (an object or array is one level, one
// inside it two). It is one pass over v without recursion, so its cost is
// bounded by v's length whatever the nesting.
func DeeperThan(v []byte, max int) bool {
	depth := 0
	inString := false
	for i := 0; i < len(v); i++ {
		c := v[i]
		if inString {
			switch c {
			case '\\':
				i++ // the escaped byte cannot end the string
			case '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '{', '[':
			if depth++; depth > max {
				return true
			}
		case '}', ']':
			depth--
		}
	}
	return false
}
